"""The PyTorch Hyformer twin for transformers, registered with the Auto classes.

`configuration_hyformer.py` and `modeling_hyformer.py` are self-contained (torch + transformers only);
`export_code` copies them into a checkpoint directory so that it loads with `trust_remote_code=True`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from jaxmodels_interop.hf_hyformer.configuration_hyformer import HyformerConfig
from jaxmodels_interop.hf_hyformer.modeling_hyformer import HyformerForCausalLM, HyformerModel, HyformerOutput, KVCache

CODE_FILES = ("configuration_hyformer.py", "modeling_hyformer.py")
AUTO_MAP = {"AutoConfig": "configuration_hyformer.HyformerConfig",
            "AutoModel": "modeling_hyformer.HyformerModel",
            "AutoModelForCausalLM": "modeling_hyformer.HyformerForCausalLM"}

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
