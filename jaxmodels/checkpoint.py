"""Our own checkpoint directory: config.json + model.safetensors keyed by NNX parameter paths.

Loading fills an abstract model (`nnx.eval_shape`), checks every shape and dtype, collects every problem,
and fails if any parameter is left unfilled or any stored tensor is unused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import save_file

from jaxmodels.io import atomic_directory

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_KEY = "jaxmodels_version"
FORMAT_VERSION = 1


def _key(path) -> str:
    return ".".join(str(p) for p in path)


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """{"blocks.0.attn.q_proj.kernel": array, ...} for every nnx.Param of the model."""
    return {_key(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def save_model(model: nnx.Module, config, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Writes config.json and model.safetensors into `path` atomically."""
    tensors = {k: np.asarray(jax.device_get(v)) for k, v in flat_params(model).items()}
    cfg = {**config.to_dict(), FORMAT_KEY: FORMAT_VERSION}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "jaxmodels"})
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return Path(path)


def is_native_checkpoint(path: str | os.PathLike) -> bool:
    cfg = Path(path) / CONFIG_NAME
    return cfg.is_file() and FORMAT_KEY in json.loads(cfg.read_text())


def fill_abstract(abstract: nnx.Module, tensors: dict[str, np.ndarray], *, source: str, dtype=None) -> nnx.Module:
    """Returns `abstract` (from nnx.eval_shape) with every Param taken from `tensors`.

    Raises ValueError listing every missing key, unused key and shape mismatch at once.
    """
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    flat = nnx.to_flat_state(params)
    problems, filled = [], []
    used = set()
    for path, var in flat:
        key = _key(path)
        if key not in tensors:
            problems.append(f"missing tensor {key!r} (expected shape {tuple(var.shape)})")
            continue
        used.add(key)
        arr = tensors[key]
        if tuple(arr.shape) != tuple(var.shape):
            problems.append(f"tensor {key!r} has shape {tuple(arr.shape)}, expected {tuple(var.shape)}")
            continue
        filled.append((path, var.replace(jnp.asarray(arr, dtype=dtype or var.dtype))))
    problems += [f"unexpected tensor {k!r} (no such parameter)" for k in sorted(set(tensors) - used)]
    if problems:
        raise ValueError(f"{source}: {len(problems)} problem(s) loading weights:\n  " + "\n  ".join(problems))
    return nnx.merge(graphdef, nnx.from_flat_state(filled), rest)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def load_model(model_cls, config_cls, path: str | os.PathLike, *, dtype=None) -> nnx.Module:
    """Builds `model_cls(config)` abstractly and fills it from `path`/model.safetensors."""
    path = Path(path)
    config = config_cls.from_pretrained(path)
    abstract = nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))
    return fill_abstract(abstract, read_safetensors(path / WEIGHTS_NAME), source=str(path), dtype=dtype)
