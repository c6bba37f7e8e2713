"""Our own checkpoint directory: config.json (our fields, model_type, jaxmodels_version) and safetensors
keyed by NNX parameter paths ("blocks.0.attn.q_proj.kernel"), in our layouts. Written atomically.

An int8 model (jaxmodels.quantize) stores its int8 values and scales as they are ("...q_proj.kernel" I8,
"...q_proj.scale" F32 or F16), and config.json records the quantisation under "quantization".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
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
QUANTIZATION_KEY = "quantization"


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """{"blocks.0.attn.q_proj.kernel": array, ...} for every nnx.Param of the model."""
    return {param_key(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def model_tensors(model: nnx.Module) -> list[PlannedTensor]:
    """Every parameter as a PlannedTensor keyed by its path, sorted (copied to the host when written)."""
    return [PlannedTensor(k, tuple(v.shape), np.dtype(v.dtype), lambda v=v: np.asarray(jax.device_get(v)))
            for k, v in sorted(flat_params(model).items())]


def native_config(config, quantization: dict | None = None) -> dict:
    """Our config.json: the config's fields and the format version, and the quantisation record if any."""
    out = {**config.to_dict(), FORMAT_KEY: FORMAT_VERSION}
    return out if quantization is None else {**out, QUANTIZATION_KEY: quantization}


def write_native(config, tensors: Sequence[PlannedTensor], path: str | os.PathLike, *, overwrite: bool,
                 max_shard_bytes: int | None = None, quantization: dict | None = None) -> Path:
    """Writes config.json and model.safetensors (or shards + index) into `path` atomically."""
    with atomic_directory(path, overwrite=overwrite) as tmp:
        write_shards(list(tensors), tmp, max_shard_bytes=max_shard_bytes, metadata={"format": "jaxmodels"})
        text = json.dumps(native_config(config, quantization), indent=2, sort_keys=True) + "\n"
        (tmp / CONFIG_NAME).write_text(text)
    return Path(path)

