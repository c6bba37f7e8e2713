"""V.V.A.L.T between our Flax models and the PyTorch twin / Hugging Face layout, under the names this module has
always offered. Each is the family-generic function (jaxmodels.pretrained, jaxmodels_interop.verify) applied to
V.V.A.L.T: its family record (jaxmodels/vvalt/family.py) carries the key table, the three classes and the twin's
modeling code (interop/vvalt_torch.py, shipped as modeling_vvalt.py for `trust_remote_code=True`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxmodels import pretrained
from jaxmodels.checkpoint import model_tensors
from jaxmodels.vvalt.convert import VVALT_TABLE
from jaxmodels.vvalt.convert import load as load_hf
from jaxmodels_interop.verify import max_difference, verify_dirs

__all__ = ["export_hf", "flax_to_hf_tensors", "from_hf", "load_hf", "to_hf", "verify_dirs", "verify_export"]


def flax_to_hf_tensors(model) -> dict[str, np.ndarray]:
    """{twin state-dict key: array} for every parameter of a Flax V.V.A.L.T model."""
    out = {}
    for t in model_tensors(model):
        key, transform = VVALT_TABLE.to_hf(t.key)
        out[key] = transform.to_hf(t.produce())
    return out


def export_hf(model, path: str | os.PathLike, *, overwrite: bool = False, max_shard_bytes: int | None = None,
              dtype=None) -> Path:
    """jaxmodels.export_hf: a transformers-loadable directory, atomically; an existing `path` needs overwrite."""
    return pretrained.export_hf(model, path, overwrite=overwrite, max_shard_size=max_shard_bytes, dtype=dtype)


def to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False, max_shard_bytes: int | None = None,
          dtype=None) -> dict:
    """Our checkpoint directory (or a training run holding one) -> a transformers directory."""
    return pretrained.convert_to_hf(src, dst, overwrite=force, max_shard_size=max_shard_bytes, dtype=dtype)


def from_hf(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False, max_shard_bytes: int | None = None,
            dtype=None) -> dict:
    """A transformers V.V.A.L.T directory (the twin's) -> our checkpoint directory (float32 or float64)."""
    return pretrained.convert_from_hf(src, dst, model_type="vvalt", overwrite=force, max_shard_size=max_shard_bytes,
                                      dtype=dtype)


def verify_export(model, hf_dir: str | os.PathLike, *, seed: int = 0) -> float:
    """Runs `model` and the exported twin on the same random inputs; returns the largest output difference."""
    return max_difference(model, hf_dir, seed=seed)[0]
