"""jaxmodels: Flax NNX re-implementations of Hyformer and friends. Imports jax/flax/numpy only.

Importing the package registers the built-in model families (jaxmodels.family), which `from_pretrained`,
`export_hf` and `jaxmodels-convert` read.
"""

from jaxmodels.family import Family, register
from jaxmodels.generate import generate
from jaxmodels.hyformer import Hyformer, HyformerConfig, ModelOutput, PredictionHead
from jaxmodels.gemma3 import Gemma3Config, Gemma3ForCausalLM
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM, Qwen2Config
from jaxmodels.mistral import MistralConfig, MistralForCausalLM
from jaxmodels.qwen3 import Qwen3Config, Qwen3ForCausalLM
from jaxmodels.pretrained import export_hf, from_pretrained
from jaxmodels.vvalt import VVALTConfig, VVALTForRegression, VVALTForSequenceClassification, VVALTModel

__all__ = ["Family", "Gemma3Config", "Gemma3ForCausalLM", "Hyformer", "HyformerConfig", "LlamaConfig",
           "LlamaForCausalLM", "MistralConfig", "MistralForCausalLM", "ModelOutput", "PredictionHead", "Qwen2Config",
           "Qwen3Config", "Qwen3ForCausalLM", "VVALTConfig", "VVALTForRegression", "VVALTForSequenceClassification",
           "VVALTModel", "export_hf", "from_pretrained", "generate", "register"]
