"""Mistral decoders: Llama without biases, every layer a causal sliding window of `sliding_window` tokens
(null: full attention)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxmodels.family import register
from jaxmodels.layers.decoder import DecoderSpec
from jaxmodels.llama import _LLAMA_FIELDS, LlamaConfig, LlamaForCausalLM, causal_lm_family, read_layer_types


@dataclasses.dataclass(frozen=True)
class MistralConfig(LlamaConfig):
    """The subset of transformers' MistralConfig these models implement."""

    model_type = "mistral"

    sliding_window: int | None = None  # None: full attention

    # transformers' MistralForCausalLM has no biases and reads neither attention_bias nor mlp_bias.
    _hf_fields: ClassVar[tuple[str, ...]] = tuple(k for k in _LLAMA_FIELDS if k not in ("attention_bias", "mlp_bias"))

    def decoder_spec(self) -> DecoderSpec:
        if self.sliding_window is None:
            return super().decoder_spec()
        return dataclasses.replace(super().decoder_spec(), sliding_window=self.sliding_window,
                                   layer_types=("sliding_attention",) * self.num_hidden_layers)

    @classmethod
    def _read_layers(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        # Mistral's model reads no layer_types (transformers warns and ignores them): left for the ignored list.
        window = hf.pop("sliding_window", 4096)
        values, problems = read_layer_types(["sliding_attention" if window is not None else "full_attention"],
                                            window)
        return {"sliding_window": values["sliding_window"]}, problems

    def to_hf_config(self) -> dict[str, Any]:
        hf = super().to_hf_config()
        for key in ("attention_bias", "mlp_bias"):
            hf.pop(key)
        hf.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=self.sliding_window)
        return hf


class MistralForCausalLM(LlamaForCausalLM):
    """A Mistral model: `LlamaForCausalLM` over a `MistralConfig`."""


MISTRAL_FAMILY = register(causal_lm_family(MistralConfig, MistralForCausalLM))
