"""`from_pretrained`: load our checkpoint directories and Hugging Face ones, by `model_type`."""

from __future__ import annotations

import os
from pathlib import Path

from flax import nnx

from jaxmodels.checkpoint import FORMAT_KEY
from jaxmodels.hf.convert import fill
from jaxmodels.hf.families import FAMILIES, detect_model_type, read_config
from jaxmodels.hf.source import SafetensorsCheckpoint


def load_config(path: str | os.PathLike, model_type: str | None = None):
    """-> (family, config, native?) for a checkpoint directory of ours or of Hugging Face."""
    path = Path(path)
    cfg = read_config(path)
    family = FAMILIES[detect_model_type(cfg, str(path), model_type)]
    config_cls, _ = family.classes()
    source = str(path / "config.json")
    if FORMAT_KEY in cfg:
        return family, config_cls.from_dict(cfg, source=source), True
    return family, family.config_from_hf(cfg, source), False


def from_pretrained(path: str | os.PathLike, *, model_type: str | None = None, dtype=None):
    """Loads a checkpoint directory (config.json + safetensors, single or sharded) into a Flax NNX model.

    Either format: one written by this project, or a Hugging Face PyTorch checkpoint (Llama, Qwen2,
    Qwen2.5 text, or Hyformer in the original's layout). The model class comes from `model_type`
    (argument, else config.json); unsupported types or config attributes raise an error naming them.
    """
    if (model_type or read_config(path).get("model_type")) == "vvalt":
        from jaxmodels.vvalt import load as load_vvalt  # the class follows from the stored heads

        return load_vvalt(path, dtype=dtype)
    family, config, native = load_config(path, model_type)
    _, model_cls = family.classes()
    ckpt = SafetensorsCheckpoint(path)
    abstract = nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))
    if native:
        return fill(abstract, ckpt, None, dtype=dtype)
    return fill(abstract, ckpt, family.table, tied=family.tied(config), dtype=dtype)
