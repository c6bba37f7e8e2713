"""jaxmodels: Flax NNX re-implementations of Hyformer and friends. Imports jax/flax/numpy only.

Importing the package registers the built-in model families (jaxmodels.family), which `from_pretrained`,
`export_hf` and `jaxmodels-convert` read.
"""

from jaxmodels.family import Family, register
from jaxmodels.generate import generate
from jaxmodels.hyformer import Hyformer, HyformerConfig, ModelOutput, PredictionHead
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM, Qwen2Config
from jaxmodels.pretrained import export_hf, from_pretrained
from jaxmodels.vvalt import VVALTConfig, VVALTForRegression, VVALTForSequenceClassification, VVALTModel

__all__ = ["Family", "Hyformer", "HyformerConfig", "LlamaConfig", "LlamaForCausalLM", "ModelOutput", "PredictionHead",
           "Qwen2Config", "VVALTConfig", "VVALTForRegression", "VVALTForSequenceClassification", "VVALTModel",
           "export_hf", "from_pretrained", "generate", "register"]
