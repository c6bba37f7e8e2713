"""Selecting the matrices of a Flax model to fine-tune, and their SVD, cached on disk as safetensors.

Candidates are the kernels of every `Linear` layer, named by our parameter path
("blocks.0.mlp.gate_proj.kernel"); `pattern` is a regular expression searched in that path. The default
selects the MLP matrices (gate, up, down) of every layer, as the official Transformer² code does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxmodels import family as families
from jaxmodels.io import atomic_path
from jaxmodels.layers.linear import Linear
from jaxmodels.svf.component import SvdComponent

DEFAULT_PATTERN = r"\.mlp\.(gate|up|down)_proj\.kernel$"
CACHE_FORMAT = "jaxmodels-svf-svd-1"


@dataclasses.dataclass(frozen=True)
class MatrixInfo:
    """Where a selected matrix lives: our key and kernel shape; its Hugging Face name and shape [O, I]."""

    key: str
    kernel_shape: tuple[int, ...]
    flat_shape: tuple[int, int]  # [I, O]
    hf_name: str
    hf_shape: tuple[int, int]  # [O, I]

    @property
    def rank(self) -> int:
        return min(self.flat_shape)


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """The selected matrices of one model (in model order) and their SVD components, keyed by our keys."""

    model_type: str
    pattern: str
    matrices: tuple[MatrixInfo, ...]
    components: dict[str, SvdComponent]

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.matrices]

    @property
    def num_z(self) -> int:
        """sum over the selected matrices of min(rows, cols)."""
        return sum(m.rank for m in self.matrices)


def model_type_of(model: nnx.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in families.model_types():
        raise ValueError(f"SVF needs a model with a known config.model_type ({families.model_types()}) to name its "
                         f"matrices by Hugging Face parameter names; got {type(model).__name__} with "
                         f"model_type {model_type!r}")
    return model_type


def select_matrices(model: nnx.Module, pattern: str = DEFAULT_PATTERN) -> tuple[MatrixInfo, ...]:
    """The Linear kernels whose path matches `pattern` (re.search), in model order."""
    model_type = model_type_of(model)
    table = families.get(model_type).table
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"SVF pattern {pattern!r} is not a valid regular expression ({e})") from None
    candidates, selected = [], []
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, Linear):
            continue
        key = ".".join(str(p) for p in path) + ".kernel"
        candidates.append(key)
        if not regex.search(key):
            continue
        mapped = table.to_hf(key)
        if mapped is None:
            raise ValueError(f"parameter {key!r} has no entry in the {table.name} key table, so an expert could "
                             f"not name it; narrow the SVF pattern {pattern!r}")
        flat = (math.prod(node.in_shape), math.prod(node.out_shape))
        selected.append(MatrixInfo(key, node.in_shape + node.out_shape, flat, mapped[0], (flat[1], flat[0])))
    if not selected:
        shown = ", ".join(candidates[:8]) + (", ..." if len(candidates) > 8 else "")
        raise ValueError(f"SVF pattern {pattern!r} selects no matrices of this {model_type} model; it is searched "
                         f"in the Linear kernels' paths, e.g. {shown}")
    return tuple(selected)


def _kernels(model: nnx.Module, matrices) -> dict[str, np.ndarray]:
    params = {".".join(str(p) for p in path): v[...] for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    return {m.key: np.asarray(jax.device_get(params[m.key]), np.float64).reshape(m.flat_shape) for m in matrices}


def _digest(pattern: str, kernels: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(pattern.encode())
    for key in sorted(kernels):
        h.update(f"{key}{kernels[key].shape}".encode())
        h.update(np.ascontiguousarray(kernels[key].astype(np.float32)).tobytes())
    return h.hexdigest()[:24]


def _svd(w: np.ndarray) -> dict[str, np.ndarray]:
    """float64 SVD of w [I, O] -> u [I, R], s [R], v [O, R] as float32."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return {"u": u.astype(np.float32), "s": s.astype(np.float32), "v": np.ascontiguousarray(vt.T).astype(np.float32)}


def _read_cache(path: Path, matrices) -> dict[str, dict[str, np.ndarray]] | None:
    """The cached factors, or None when the file is absent, unreadable or does not fit (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    out = {}
    for m in matrices:
        r = m.rank
        want = {"u": (m.flat_shape[0], r), "s": (r,), "v": (m.flat_shape[1], r)}
        parts = {name: tensors.get(f"{m.key}.{name}") for name in want}
        if any(p is None or p.shape != shape for p, shape in zip(parts.values(), want.values())):
            return None
        out[m.key] = parts
    return out


def _fits(parts: dict[str, np.ndarray], w: np.ndarray) -> bool:
    """Whether cached factors reproduce the kernel w [I, O] (float32 round-off aside): a damaged or foreign
    cache file with the right shapes is caught here and rebuilt instead of silently patching the wrong W."""
    u, s, v = (parts[k].astype(np.float32) for k in ("u", "s", "v"))
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(s)) and np.all(np.isfinite(v))):
        return False
    err = np.max(np.abs((u * s) @ v.T - w))
    return bool(err <= 1e-4 * max(float(np.max(np.abs(w))), 1e-30))


def decompose(model: nnx.Module, pattern: str = DEFAULT_PATTERN, *,
              cache_dir: str | os.PathLike | None = None) -> Decomposition:
    """SVD of the selected matrices (float64, stored float32); with cache_dir, read from or written to
    `cache_dir/svd-<digest of pattern and weights>.safetensors` (atomically)."""
    matrices = select_matrices(model, pattern)
    kernels = _kernels(model, matrices)
    factors = None
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"svd-{_digest(pattern, kernels)}.safetensors"
        factors = _read_cache(path, matrices)
        if factors is not None and not all(_fits(factors[k], w) for k, w in kernels.items()):
            warnings.warn(f"SVD cache {path} does not reproduce this model's weights (damaged or written for "
                          f"other weights); recomputing it", stacklevel=2)
            factors = None
    if factors is None:
        factors = {key: _svd(w) for key, w in kernels.items()}
        if path is not None:
            with atomic_path(path) as tmp:  # save_file streams to a file name: no second copy in memory
                save_file({f"{k}.{n}": a for k, parts in factors.items() for n, a in parts.items()}, str(tmp),
                          metadata={"format": CACHE_FORMAT, "pattern": pattern,
                                    "keys": json.dumps([m.key for m in matrices])})
    components = {k: SvdComponent(jnp.asarray(p["u"]), jnp.asarray(p["s"]), jnp.asarray(p["v"]))
                  for k, p in factors.items()}
    return Decomposition(model_type_of(model), pattern, matrices, components)
