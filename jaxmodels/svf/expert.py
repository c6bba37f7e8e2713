"""SVF experts on disk: one safetensors file, z [R] per matrix keyed by its Hugging Face parameter name.

The file's metadata holds a manifest (format, model type, and each matrix's Hugging Face shape [O, I]
and rank), so an expert made for another model is refused with every difference listed. The same file
applies to the PyTorch model through `interop.svf_torch`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from jaxmodels.io import atomic_open
from jaxmodels.svf.decompose import Decomposition

EXPERT_FORMAT = "jaxmodels-svf-expert"
EXPERT_VERSION = 1


class ExpertMismatchError(ValueError):
    """An expert file that is not an SVF expert, or was made for another model."""


def manifest_for(decomposition: Decomposition, *, name: str | None = None) -> dict[str, Any]:
    return {"format": EXPERT_FORMAT, "version": EXPERT_VERSION, "model_type": decomposition.model_type,
            "pattern": decomposition.pattern, "mask": "sigmoid", "name": name,
            "matrices": {m.hf_name: {"shape": list(m.hf_shape), "rank": m.rank} for m in decomposition.matrices}}


def save_expert(path: str | os.PathLike, decomposition: Decomposition, z: dict[str, jax.Array], *,
                name: str | None = None) -> Path:
    """Writes {hf_name: z [R] float32} and the manifest to `path` atomically."""
    path = Path(path)
    tensors = {m.hf_name: np.asarray(jax.device_get(z[m.key]), np.float32) for m in decomposition.matrices}
    with atomic_open(path, "wb") as f:  # one small vector per matrix: serialising in memory is cheap
        f.write(save(tensors, metadata={"manifest": json.dumps(manifest_for(decomposition, name=name))}))
    return path


def read_expert(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> ({hf_name: z [R] float32}, manifest); NumPy only, shared with the PyTorch side."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SVF expert {path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            z = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ExpertMismatchError(f"SVF expert {path}: not a readable safetensors file ({e})") from None
    try:
        manifest = json.loads(meta["manifest"])
        ok = manifest.get("format") == EXPERT_FORMAT and isinstance(manifest.get("matrices"), dict)
    except (KeyError, json.JSONDecodeError, AttributeError):
        ok = False
    if not ok:
        raise ExpertMismatchError(f"SVF expert {path}: no {EXPERT_FORMAT} manifest in the safetensors metadata "
                                  f"(not written by save_expert / save_z_checkpoint)")
    if manifest.get("version") != EXPERT_VERSION:
        raise ExpertMismatchError(f"SVF expert {path}: format version {manifest.get('version')!r}, this code reads "
                                  f"version {EXPERT_VERSION}")
    if set(z) != set(manifest["matrices"]):
        raise ExpertMismatchError(f"SVF expert {path}: its tensors and its manifest list different matrices")
    for name, entry in manifest["matrices"].items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        rank = entry.get("rank") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)
                and type(rank) is int and rank > 0):
            raise ExpertMismatchError(f"SVF expert {path}: manifest entry matrices[{name!r}] is {entry!r}; expected "
                                      f"{{\"shape\": [rows, cols], \"rank\": r}} with positive integers")
    for name, vector in z.items():
        if not np.issubdtype(vector.dtype, np.floating) or vector.ndim != 1:
            raise ExpertMismatchError(f"SVF expert {path}: z of {name} is {vector.dtype} of shape "
                                      f"{list(vector.shape)}; expected a float vector [rank]")
        bad = int(np.sum(~np.isfinite(vector)))
        if bad:
            raise ExpertMismatchError(f"SVF expert {path}: z of {name} holds {bad} non-finite value(s) (NaN or inf)")
    return z, manifest


def check_fits(path, z: dict[str, np.ndarray], manifest: dict[str, Any],
               expected: dict[str, tuple[tuple[int, ...], int]],
               *, model_type: str | None, target: str) -> None:
    """Raises ExpertMismatchError listing every difference from `expected` {hf_name: (hf_shape, rank)}."""
    problems = []
    if model_type is not None and manifest.get("model_type") != model_type:
        problems.append(f"made for model_type {manifest.get('model_type')!r}, this is {model_type!r}")
    missing = sorted(set(expected) - set(z))
    unexpected = sorted(set(z) - set(expected))
    if missing:
        problems.append(f"{len(missing)} matrix(es) of {target} missing from the expert, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} matrix(es) that {target} does not select, e.g. {unexpected[:3]}")
    for name in sorted(set(expected) & set(z)):
        shape, rank = expected[name]
        stored = tuple(manifest["matrices"][name]["shape"])
        if stored != tuple(shape) or z[name].shape != (rank,):
            problems.append(f"{name}: expert has weight shape {list(stored)} and z of shape {list(z[name].shape)}, "
                            f"{target} has weight shape {list(shape)} (z of shape [{rank}])")
    if problems:
        raise ExpertMismatchError(f"SVF expert {path} does not fit {target}: " + "; ".join(problems[:8])
                                  + ("; ..." if len(problems) > 8 else ""))


def load_expert(path: str | os.PathLike, decomposition: Decomposition) -> dict[str, jax.Array]:
    """-> {our key: z [R]} for an expert made for this model; ExpertMismatchError otherwise."""
    z, manifest = read_expert(path)
    expected = {m.hf_name: (m.hf_shape, m.rank) for m in decomposition.matrices}
    check_fits(path, z, manifest, expected, model_type=decomposition.model_type,
               target=f"this {decomposition.model_type} model (pattern {decomposition.pattern!r})")
    return {m.key: jnp.asarray(z[m.hf_name], jnp.float32) for m in decomposition.matrices}
