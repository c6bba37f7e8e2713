"""Gemma 3 text decoders (transformers' Gemma3ForCausalLM, model_type "gemma3_text").

On the Llama stack: sliding-window local layers and global layers (`layer_types`, or every
`sliding_window_pattern`-th layer global), the local layers with their own RoPE (`rope_parameters` per layer
type, or the older `rope_local_base_freq`), a GeGLU MLP (tanh gelu), RMSNorms with weight (1 + w) in float32,
four of them per block plus per-head q/k norms, embeddings scaled by sqrt(hidden_size) (the scale cast to
their dtype first), scores scaled by query_pre_attn_scalar**-0.5, optional final logit softcapping, tied
embeddings by default.

`attn_logit_softcapping` is accepted and ignored: transformers' Gemma 3 stores it but never passes it to an
attention function (5.25; Gemma 2 does), so it does not change what transformers computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxmodels.family import register
from jaxmodels.hf.tables import GEMMA3
from jaxmodels.layers.decoder import DecoderSpec
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM, _rope, causal_lm_family, read_layer_types

_GEMMA3_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias",
                  "tie_word_embeddings", "query_pre_attn_scalar", "final_logit_softcapping", "bos_token_id",
                  "eos_token_id", "pad_token_id")
_GEMMA3_FIXED = {"hidden_activation": ("gelu_pytorch_tanh",), "attention_dropout": (0, 0.0, None),
                 "use_bidirectional_attention": (False, None)}
_DEFAULT_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}  # transformers' default_theta


def _rope_of(rope: dict, layer_type: str) -> tuple[float, tuple | None, list[str], dict[str, Any]]:
    """One layer type's rope_parameters -> (theta, scaling, problems, ignored) with the problems named by type."""
    theta, scaling, problems, ignored = _rope({"rope_parameters": rope})
    return (theta, scaling, [f"rope_parameters.{layer_type}: {p}" for p in problems],
            {k.replace("rope_parameters.", f"rope_parameters.{layer_type}."): v for k, v in ignored.items()})


@dataclasses.dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    """The subset of transformers' Gemma3TextConfig these models implement."""

    model_type = "gemma3_text"

    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0  # the full_attention layers'; rope_scaling too
    tie_word_embeddings: bool = True
    layer_types: tuple[str, ...] = ()  # () = every layer full_attention
    sliding_window: int | None = None
    local_rope_theta: float = 10_000.0  # the sliding_attention layers' (transformers' rope_local_base_freq)
    local_rope_scaling: tuple | None = None
    query_pre_attn_scalar: float = 256
    final_logit_softcapping: float | None = None

    _hf_fields: ClassVar[tuple[str, ...]] = _GEMMA3_FIELDS
    _hf_fixed: ClassVar[dict[str, tuple]] = _GEMMA3_FIXED

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if isinstance(self.local_rope_scaling, (dict, list)):
            items = (self.local_rope_scaling.items() if isinstance(self.local_rope_scaling, dict)
                     else self.local_rope_scaling)
            object.__setattr__(self, "local_rope_scaling", tuple(sorted((str(k), v) for k, v in items)))
        super().__post_init__()

    @classmethod
    def tiny(cls, **kw) -> Gemma3Config:
        """Two local layers (window 7) around a global one, head_dim 10, query_pre_attn_scalar 12."""
        return super().tiny(**{"num_hidden_layers": 3, "head_dim": 10, "query_pre_attn_scalar": 12,
                               "layer_types": ("sliding_attention", "full_attention", "sliding_attention"),
                               "sliding_window": 7, **kw})

    def decoder_spec(self) -> DecoderSpec:
        return dataclasses.replace(
            super().decoder_spec(), layer_types=self.layer_types, sliding_window=self.sliding_window,
            local_rope_theta=self.local_rope_theta, local_rope_scaling=self.local_rope_scaling or (), qk_norm=True,
            norm_flavour="offset", mlp_activation="gelu_tanh", sandwich_norms=True,
            embed_scale=self.hidden_size ** 0.5, attn_scale=self.query_pre_attn_scalar ** -0.5,
            logit_softcap=self.final_logit_softcapping)

    @classmethod
    def _hf_defaults(cls) -> dict[str, Any]:
        return {"head_dim": 256}  # transformers' default; not hidden_size / num_attention_heads

    @classmethod
    def _read_rope(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Per layer type, as transformers' convert_rope_params_to_dict: rope_parameters {layer type: params},
        else the older rope_theta / rope_scaling (global layers) and rope_local_base_freq (local layers)."""
        rope = dict(hf.pop("rope_parameters", None) or {})
        per_type = {t: dict(rope.get(t) or {}) for t in _DEFAULT_THETA} if set(rope) <= set(_DEFAULT_THETA) else {
            "full_attention": rope, "sliding_attention": {}}
        per_type["full_attention"].update(hf.pop("rope_scaling", None) or {})
        for layer_type, key in (("full_attention", "rope_theta"), ("sliding_attention", "rope_local_base_freq")):
            per_type[layer_type].setdefault("rope_theta", hf.pop(key, _DEFAULT_THETA[layer_type]))  # popped either way
        theta, scaling, problems, ignored = _rope_of(per_type["full_attention"], "full_attention")
        local_theta, local_scaling, local_problems, local_ignored = _rope_of(per_type["sliding_attention"],
                                                                             "sliding_attention")
        return ({"rope_theta": theta, "rope_scaling": scaling, "local_rope_theta": local_theta,
                 "local_rope_scaling": local_scaling}, problems + local_problems, {**ignored, **local_ignored})

    @classmethod
    def _read_layers(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        window = hf.pop("sliding_window", 4096)
        pattern = hf.pop("sliding_window_pattern", hf.pop("_sliding_window_pattern", 6))  # both popped
        layer_types = hf.pop("layer_types", None) or [
            "sliding_attention" if (i + 1) % pattern else "full_attention"
            for i in range(hf.get("num_hidden_layers", 26))]
        return read_layer_types(layer_types, window)

    def to_hf_config(self) -> dict[str, Any]:
        def rope(theta, scaling):
            return {"rope_theta": theta, **(dict(scaling) if scaling else {"rope_type": "default"})}

        return {
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.dim_per_head,
            "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"full_attention": rope(self.rope_theta, self.rope_scaling),
                                "sliding_attention": rope(self.local_rope_theta, self.local_rope_scaling)},
            "layer_types": list(self.layer_types) or ["full_attention"] * self.num_hidden_layers,
            "sliding_window": self.sliding_window, "attention_bias": self.attention_bias,
            "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "final_logit_softcapping": self.final_logit_softcapping, "attn_logit_softcapping": None,
            "use_bidirectional_attention": False, "tie_word_embeddings": self.tie_word_embeddings,
            "attention_dropout": 0.0, "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }


class Gemma3ForCausalLM(LlamaForCausalLM):
    """A Gemma 3 text model: `LlamaForCausalLM` over a `Gemma3Config`."""


GEMMA3_FAMILY = register(causal_lm_family(Gemma3Config, Gemma3ForCausalLM, GEMMA3))
