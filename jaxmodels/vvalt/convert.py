"""Loading V.V.A.L.T checkpoints: ours, or the PyTorch twin's / Hugging Face layout, through one key table.

The table is data: (Hugging Face key, our parameter path, named transform), used in both directions by
jaxmodels.pretrained (the family record is in jaxmodels/vvalt/family.py). The body keeps the original HF wrapper's
flat names (`encoder_W_semantic`, ...) with our [in, out] layout, so it maps as is; the heads are
`nn.Linear`s, whose [out, in] weight is our kernel transposed.
"""

from __future__ import annotations

import dataclasses
import os

from jaxmodels.config import build
from jaxmodels.hf.config_policy import HFConfigReader
from jaxmodels.hf.tables import KeyTable
from jaxmodels.hf.transforms import IDENTITY, LINEAR
from jaxmodels.pretrained import from_pretrained
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

def kind_of(keys, source: str) -> str:
    """"classification", "regression" or "base" from a checkpoint's tensor names (ours or HF)."""
    keys = set(keys)
    heads = [k for k, prefix in (("classification", "classifier."), ("regression", "regressor."))
             if any(key.startswith(prefix) for key in keys)]
    if len(heads) > 1:
        raise ValueError(f"{source}: holds both a classifier and a regressor head; expected at most one")
    return heads[0] if heads else "base"


def read_hf_config(cfg: dict, source: str = "config.json") -> tuple[VVALTConfig, dict]:
    """The twin's config.json -> (VVALTConfig, ignored attributes): the twin reads our fields and nothing else
    (jaxmodels.hf.config_policy); num_labels falls back to the size of id2label."""
    if cfg.get("model_type") != "vvalt":
        raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'vvalt'")
    reader = HFConfigReader("vvalt", {f.name: f.name for f in dataclasses.fields(VVALTConfig)})
    fields, ignored = reader.read({k: v for k, v in cfg.items() if k != "model_type"}, source=source)
    if "num_labels" not in fields and "id2label" in cfg:
        fields["num_labels"] = len(cfg["id2label"])
        ignored.pop("id2label", None)
    return build(VVALTConfig, fields, source), ignored


def config_from_hf(cfg: dict, source: str = "config.json") -> VVALTConfig:
    """A VVALTConfig from the twin's config.json (see read_hf_config)."""
    return read_hf_config(cfg, source)[0]


def config_to_hf(config: VVALTConfig, kind: str) -> dict:
    """The twin's config.json: our fields and the architecture (the export adds auto_map, see family.py)."""
    fields = {**dataclasses.asdict(config), "safe_bounds": list(config.safe_bounds)}
    return {"model_type": "vvalt", "architectures": [ARCHITECTURES[kind]], **fields}


def load(path: str | os.PathLike, *, dtype=None, expected: type | None = None):
    """Loads a V.V.A.L.T directory written by us (save_pretrained) or by the PyTorch twin / transformers.

    The class (body, classifier or regressor) follows from the stored tensor names; `expected` insists on
    one. Every tensor is checked against the model's shapes, and every problem is reported at once.
    """
    return from_pretrained(path, model_type="vvalt", dtype=dtype, expected=expected)
