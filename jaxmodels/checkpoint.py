"""Our own checkpoint directory: config.json (our fields, model_type, jaxmodels_version) and safetensors
keyed by NNX parameter paths ("blocks.0.attn.q_proj.kernel"), in our layouts. Written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxmodels.hf.convert import param_key
from jaxmodels.hf.writer import PlannedTensor, write_shards
from jaxmodels.io import atomic_directory

CONFIG_NAME = "config.json"
FORMAT_KEY = "jaxmodels_version"
FORMAT_VERSION = 1


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """{"blocks.0.attn.q_proj.kernel": array, ...} for every nnx.Param of the model."""
    return {param_key(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def native_config(config) -> dict:
    return {**config.to_dict(), FORMAT_KEY: FORMAT_VERSION}


def save_model(model: nnx.Module, config, path: str | os.PathLike, *, overwrite: bool = True,
               max_shard_bytes: int | None = None) -> Path:
    """Writes config.json and model.safetensors (or shards + index) into `path` atomically."""
    planned = [PlannedTensor(k, tuple(v.shape), np.dtype(v.dtype), lambda v=v: np.asarray(jax.device_get(v)))
               for k, v in sorted(flat_params(model).items())]
    with atomic_directory(path, overwrite=overwrite) as tmp:
        write_shards(planned, tmp, max_shard_bytes=max_shard_bytes, metadata={"format": "jaxmodels"})
        (tmp / CONFIG_NAME).write_text(json.dumps(native_config(config), indent=2, sort_keys=True) + "\n")
    return Path(path)
