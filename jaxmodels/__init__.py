"""jaxmodels: Flax NNX re-implementations of Hyformer and friends. Imports jax/flax/numpy only."""

from jaxmodels.generate import generate
from jaxmodels.hyformer import Hyformer, HyformerConfig, ModelOutput, PredictionHead
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM, Qwen2Config
from jaxmodels.registry import from_pretrained

__all__ = ["Hyformer", "HyformerConfig", "LlamaConfig", "LlamaForCausalLM", "ModelOutput", "PredictionHead",
           "Qwen2Config", "from_pretrained", "generate"]
