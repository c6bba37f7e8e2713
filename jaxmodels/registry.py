"""`from_pretrained`: pick the model class from `model_type` in config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _native_models():
    from jaxmodels.hyformer import Hyformer, HyformerConfig

    return {"hyformer": (Hyformer, HyformerConfig)}


def from_pretrained(path: str | os.PathLike, *, model_type: str | None = None, dtype=None):
    """Loads a checkpoint directory written by this project (config.json + model.safetensors).

    The model class comes from `model_type` (argument, else config.json). Unsupported types raise
    an error that lists the supported ones.
    """
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a checkpoint directory)")
    cfg = json.loads(cfg_path.read_text())
    model_type = model_type or cfg.get("model_type")
    models = _native_models()
    if model_type not in models:
        raise ValueError(f"{cfg_path}: unsupported model_type {model_type!r}; supported: {sorted(models)}")
    model_cls, _ = models[model_type]
    return model_cls.from_pretrained(path, dtype=dtype)
