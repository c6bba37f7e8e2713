"""Loading V.V.A.L.T checkpoints: ours, or the PyTorch twin's / Hugging Face layout, through one key table.

The table is data: (Hugging Face key, our parameter path, named transform), used in both directions by
jaxmodels.hf (import: `fill`; export: interop/vvalt_convert.py). The body keeps the original HF wrapper's
flat names (`encoder_W_semantic`, ...) with our [in, out] layout, so it maps as is; the heads are
`nn.Linear`s, whose [out, in] weight is our kernel transposed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from jaxmodels.checkpoint import FORMAT_KEY
from jaxmodels.hf.convert import fill
from jaxmodels.hf.families import read_config
from jaxmodels.hf.source import SafetensorsCheckpoint
from jaxmodels.hf.tables import KeyTable
from jaxmodels.hf.transforms import IDENTITY, LINEAR
from jaxmodels.vvalt.config import FRAME_NAMES, VVALTConfig

BODY = {"encoder": [f"{w}_{n}" for n in FRAME_NAMES for w in ("W", "b")], "selector": ["W_task", "b_task"],
        "projector": ["W_topology"], "attention": ["W_query", "W_key", "W_value", "W_output", "b_output"],
        "refiner": ["W1", "b1", "W2", "b2"]}


def _rules() -> list[tuple[str, str, object]]:
    rules = [(f"{prefix}{component}_{name}", f"{prefix}{component}.{name}", IDENTITY)
             for prefix in ("", "vvalt.") for component, names in BODY.items() for name in names]
    for head in ("classifier", "regressor"):
        rules += [(f"{head}.weight", f"{head}.kernel", LINEAR), (f"{head}.bias", f"{head}.bias", IDENTITY)]
    return rules


VVALT_TABLE = KeyTable("vvalt", _rules())
ARCHITECTURES = {"base": "VVALTModel", "classification": "VVALTForSequenceClassification",
                 "regression": "VVALTForRegression"}

# Attributes transformers writes into any config.json; they carry nothing V.V.A.L.T needs.
_HF_BOOKKEEPING = {"architectures", "auto_map", "dtype", "torch_dtype", "transformers_version", "id2label",
                   "label2id", "problem_type", "return_dict", "output_hidden_states", "output_attentions",
                   "use_return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
                   "model_type", "_name_or_path"}


def kind_of(keys, source: str) -> str:
    """"classification", "regression" or "base" from a checkpoint's tensor names (ours or HF)."""
    keys = set(keys)
    heads = [k for k, prefix in (("classification", "classifier."), ("regression", "regressor."))
             if any(key.startswith(prefix) for key in keys)]
    if len(heads) > 1:
        raise ValueError(f"{source}: holds both a classifier and a regressor head; expected at most one")
    return heads[0] if heads else "base"


def config_from_hf(cfg: dict, source: str = "config.json") -> VVALTConfig:
    """A VVALTConfig from the twin's config.json; attributes we cannot represent raise, naming them."""
    if cfg.get("model_type") != "vvalt":
        raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'vvalt'")
    ours = {f.name for f in dataclasses.fields(VVALTConfig)}
    unknown = sorted(set(cfg) - ours - _HF_BOOKKEEPING)
    if unknown:
        raise ValueError(f"{source}: unsupported V.V.A.L.T config attribute(s) {unknown}; supported: {sorted(ours)}")
    fields = {k: cfg[k] for k in ours if k in cfg}
    if "num_labels" not in fields and "id2label" in cfg:
        fields["num_labels"] = len(cfg["id2label"])
    return VVALTConfig(**fields)


def config_to_hf(config: VVALTConfig, kind: str) -> dict:
    """The twin's config.json: our fields, the architecture, and auto_map for trust_remote_code."""
    auto_map = {"AutoConfig": "modeling_vvalt.VVALTConfig", "AutoModel": "modeling_vvalt.VVALTModel"}
    if kind == "classification":
        auto_map["AutoModelForSequenceClassification"] = "modeling_vvalt.VVALTForSequenceClassification"
    fields = {**dataclasses.asdict(config), "safe_bounds": list(config.safe_bounds)}
    return {"model_type": "vvalt", "architectures": [ARCHITECTURES[kind]], "auto_map": auto_map, **fields}


def load(path: str | os.PathLike, *, dtype=None, expected: type | None = None):
    """Loads a V.V.A.L.T directory written by us (save_pretrained) or by the PyTorch twin / transformers.

    The class (body, classifier or regressor) follows from the stored tensor names; `expected` insists on
    one. Every tensor is checked against the model's shapes, and every problem is reported at once.
    """
    from jaxmodels.vvalt.model import MODEL_CLASSES, check_dtype, x64_scope

    path = Path(path)
    cfg = read_config(path)
    native = FORMAT_KEY in cfg
    source = str(path / "config.json")
    config = VVALTConfig.from_dict(cfg, source=source) if native else config_from_hf(cfg, source)
    ckpt = SafetensorsCheckpoint(path)
    kind = kind_of(ckpt.keys(), str(path))
    cls = MODEL_CLASSES[kind]
    if expected is not None and cls is not expected:
        raise ValueError(f"{path}: holds a {cls.__name__} checkpoint, not a {expected.__name__}; load it with "
                         f"{cls.__name__}.from_pretrained or jaxmodels.vvalt.load")
    if not native and cfg.get("architectures") and cfg["architectures"][0] != ARCHITECTURES[kind]:
        raise ValueError(f"{source}: architectures says {cfg['architectures'][0]!r} but the weights are those "
                         f"of {ARCHITECTURES[kind]!r}")
    target = check_dtype(dtype) if dtype is not None else None
    with x64_scope(target or jnp.float32):
        abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        return fill(abstract, ckpt, None if native else VVALT_TABLE, dtype=target)
