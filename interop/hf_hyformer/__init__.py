"""The PyTorch Hyformer twin for transformers, registered with the Auto classes.

`configuration_hyformer.py` and `modeling_hyformer.py` are self-contained (torch + transformers only);
`export_code` copies them into a checkpoint directory so that it loads with `trust_remote_code=True`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from jaxmodels.hyformer import HYFORMER_FAMILY
from jaxmodels_interop.hf_hyformer.configuration_hyformer import HyformerConfig
from jaxmodels_interop.hf_hyformer.modeling_hyformer import HyformerForCausalLM, HyformerModel, HyformerOutput, KVCache

CODE_FILES = tuple(HYFORMER_FAMILY.remote_code.files)
AUTO_MAP = HYFORMER_FAMILY.remote_code.auto_map(HYFORMER_FAMILY.model_classes[0])

AutoConfig.register("hyformer", HyformerConfig, exist_ok=True)
AutoModel.register(HyformerConfig, HyformerModel, exist_ok=True)
AutoModelForCausalLM.register(HyformerConfig, HyformerForCausalLM, exist_ok=True)


def export_code(dst_dir: str | os.PathLike) -> dict[str, str]:
    """Copies the modeling code into dst_dir (created if needed); returns the `auto_map` for its config.json.

    Typical use: `model.config.auto_map = export_code(d); model.save_pretrained(d)`.
    """
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).parent
    for name in CODE_FILES:
        shutil.copyfile(src / name, dst / name)
    return dict(AUTO_MAP)


__all__ = ["AUTO_MAP", "HyformerConfig", "HyformerForCausalLM", "HyformerModel", "HyformerOutput", "KVCache",
           "export_code"]
