"""jaxmodels: Flax NNX re-implementations of Hyformer and friends. Imports jax/flax/numpy only."""

from jaxmodels.generate import generate
from jaxmodels.hyformer import Hyformer, HyformerConfig, ModelOutput, PredictionHead
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM, Qwen2Config
from jaxmodels.registry import from_pretrained
from jaxmodels.vvalt import VVALTConfig, VVALTForRegression, VVALTForSequenceClassification, VVALTModel

__all__ = ["Hyformer", "HyformerConfig", "LlamaConfig", "LlamaForCausalLM", "ModelOutput", "PredictionHead",
           "Qwen2Config", "VVALTConfig", "VVALTForRegression", "VVALTForSequenceClassification", "VVALTModel",
           "from_pretrained", "generate"]
