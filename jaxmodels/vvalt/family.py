"""The V.V.A.L.T family record: three model classes, chosen from the stored heads; the twin's modeling code."""

from __future__ import annotations

import numpy as np

from jaxmodels.family import Family, RemoteCode, register
from jaxmodels.vvalt.config import VVALTConfig
from jaxmodels.vvalt.convert import ARCHITECTURES, VVALT_TABLE, config_to_hf, kind_of, read_hf_config
from jaxmodels.vvalt.model import MODEL_CLASSES, x64_scope

KINDS = {cls: kind for kind, cls in MODEL_CLASSES.items()}


def _choose(config: VVALTConfig, keys: list[str], hf_config: dict | None) -> type:
    kind = kind_of(keys, "the checkpoint")
    declared = (hf_config or {}).get("architectures") or [ARCHITECTURES[kind]]
    if declared[0] != ARCHITECTURES[kind]:
        raise ValueError(f"config.json: architectures says {declared[0]!r} but the weights are those of "
                         f"{ARCHITECTURES[kind]!r}")
    return MODEL_CLASSES[kind]


def _auto_map(cls: type) -> dict[str, str]:
    auto_map = {"AutoConfig": "modeling_vvalt.VVALTConfig", "AutoModel": "modeling_vvalt.VVALTModel"}
    if KINDS[cls] == "classification":
        auto_map["AutoModelForSequenceClassification"] = "modeling_vvalt.VVALTForSequenceClassification"
    return auto_map


def _inputs(config: VVALTConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"inputs_embeds": rng.standard_normal((4, config.input_dim)).astype(np.float32),
            "task_vector": rng.standard_normal((4, config.task_dim)).astype(np.float32)}


VVALT_FAMILY = register(Family(
    name="vvalt", config_class=VVALTConfig, model_classes=tuple(MODEL_CLASSES.values()), table=VVALT_TABLE,
    from_hf=read_hf_config, to_hf=lambda config, cls: config_to_hf(config, KINDS[cls]), choose_class=_choose,
    remote_code=RemoteCode("jaxmodels_interop", {"modeling_vvalt.py": "vvalt_torch.py"}, _auto_map),
    twin="jaxmodels_interop.vvalt_torch", presets={"tiny": VVALTConfig.tiny, "base": VVALTConfig.base},
    dtypes=("float32", "float64"), dtype_scope=x64_scope, verify_inputs=_inputs,
    verify_output="last_hidden_state", verify_tolerance=1e-5))
