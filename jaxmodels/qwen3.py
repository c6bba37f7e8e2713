"""Qwen3 text decoders: Llama with an RMSNorm over each query and key head before RoPE.

q/k/v/o biases follow `attention_bias` (none in the released models), `head_dim` comes from the config, and
sliding-window layers are where transformers puts them: `layer_types`, else the layers from `max_window_layers`
on, both only with `use_sliding_window`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxmodels.family import register
from jaxmodels.hf.tables import QWEN3
from jaxmodels.layers.decoder import DecoderSpec
from jaxmodels.llama import _LLAMA_FIELDS, LlamaConfig, LlamaForCausalLM, causal_lm_family, read_layer_types


@dataclasses.dataclass(frozen=True)
class Qwen3Config(LlamaConfig):
    """The subset of transformers' Qwen3Config these models implement."""

    model_type = "qwen3"

    layer_types: tuple[str, ...] = ()  # () = every layer full_attention
    sliding_window: int | None = None  # None unless transformers' use_sliding_window

    _hf_fields: ClassVar[tuple[str, ...]] = tuple(k for k in _LLAMA_FIELDS if k != "mlp_bias")

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        super().__post_init__()

    @classmethod
    def tiny(cls, **kw) -> Qwen3Config:
        return super().tiny(**{"head_dim": 10, **kw})

    def decoder_spec(self) -> DecoderSpec:
        return dataclasses.replace(super().decoder_spec(), qk_norm=True, layer_types=self.layer_types,
                                   sliding_window=self.sliding_window)

    @classmethod
    def _hf_defaults(cls) -> dict[str, Any]:
        return {"head_dim": 128}  # transformers' default; not hidden_size / num_attention_heads

    @classmethod
    def _read_layers(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        window = hf.pop("sliding_window", 4096) if hf.pop("use_sliding_window", False) else None
        first_sliding = hf.pop("max_window_layers", 28)
        hf.pop("sliding_window", None)
        layer_types = hf.pop("layer_types", None) or [
            "sliding_attention" if window is not None and i >= first_sliding else "full_attention"
            for i in range(hf.get("num_hidden_layers", 32))]
        return read_layer_types(layer_types, window)

    def to_hf_config(self) -> dict[str, Any]:
        hf = super().to_hf_config()
        hf.pop("mlp_bias")
        hf.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                  use_sliding_window=self.sliding_window is not None, sliding_window=self.sliding_window,
                  layer_types=list(self.layer_types) or ["full_attention"] * self.num_hidden_layers)
        return hf


class Qwen3ForCausalLM(LlamaForCausalLM):
    """A Qwen3 text model: `LlamaForCausalLM` over a `Qwen3Config`."""


QWEN3_FAMILY = register(causal_lm_family(Qwen3Config, Qwen3ForCausalLM, QWEN3))
