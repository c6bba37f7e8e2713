"""Qwen2.5-VL through PyTorch/transformers: an online runner with real (peft) LoRA adapters and async generation.

    from jaxmodels_interop.qwen_vl import OnlineLLM, load_hf_qwen2_5_vl_model
    llm = OnlineLLM("Qwen/Qwen2.5-VL-3B-Instruct", temperature=0.0, max_tokens=64)

CLI: `python -m interop.qwen_vl generate|learn|validate|tiny ...`; see docs/qwen_vl.md.
"""

from jaxmodels_interop.qwen_vl.adapters import AdapterBank, UnknownAdapterError
from jaxmodels_interop.qwen_vl.loading import (HFQwen2_5_VL, ModelDirectoryError, available_attn_implementations,
                                     load_hf_qwen2_5_vl_model, resolve_attn_implementation)
from jaxmodels_interop.qwen_vl.runner import OnlineLLM

__all__ = ["AdapterBank", "HFQwen2_5_VL", "ModelDirectoryError", "OnlineLLM", "UnknownAdapterError",
           "available_attn_implementations", "load_hf_qwen2_5_vl_model", "resolve_attn_implementation"]
