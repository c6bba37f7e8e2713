"""Llama-family causal decoders (Llama, Qwen2, Qwen2.5 text) on the shared Hyformer layers.

Half-split RoPE with `rope_theta` and optional linear / llama3 scaling, grouped-query attention, optional
q/k/v (Qwen2) or q/k/v/o (Llama `attention_bias`) biases, RMSNorm, tied or untied output head.
`from_hf_config` reads a transformers config.json and refuses every attribute it cannot honour.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels import checkpoint
from jaxmodels.config import ConfigMixin
from jaxmodels.hyformer import ModelOutput
from jaxmodels.layers.cache import KVCache
from jaxmodels.layers.decoder import Decoder, DecoderSpec
from jaxmodels.layers.linear import Embed
from jaxmodels.losses import compute_lm_loss

_ROPE_TYPES = ("default", "linear", "llama3")
# transformers config.json keys that carry no information about the computation.
_BOOKKEEPING = {
    "architectures", "dtype", "torch_dtype", "transformers_version", "initializer_range", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "attention_dropout", "model_type", "_name_or_path",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "tie_encoder_decoder",
    "is_encoder_decoder", "chunk_size_feed_forward", "id2label", "label2id", "problem_type", "tokenizer_class",
    "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params", "finetuning_task",
    "cross_attention_hidden_size", "add_cross_attention", "is_decoder", "pruned_heads", "tf_legacy_loss",
    "use_bfloat16", "generation_config", "quantization_config_applied", "auto_map", "max_length",
}


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ConfigMixin):
    """The subset of transformers' LlamaConfig / Qwen2Config that these models implement."""

    model_type = "llama"

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None  # sorted (key, value) items of a non-default rope_parameters
    attention_bias: bool = False  # q, k, v and o projections (Llama)
    qkv_bias: bool = False  # q, k, v only (Qwen2)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if isinstance(self.eos_token_id, list):  # configs are static module attributes: keep them hashable
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.rope_scaling, (dict, list)):
            items = self.rope_scaling.items() if isinstance(self.rope_scaling, dict) else self.rope_scaling
            object.__setattr__(self, "rope_scaling", tuple(sorted((str(k), v) for k, v in items)))
        heads, kv = self.num_attention_heads, self.num_key_value_heads or self.num_attention_heads
        if self.head_dim is None and self.hidden_size % heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={heads}")
        if heads % kv:
            raise ValueError(f"num_attention_heads={heads} must be a multiple of num_key_value_heads={kv}")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def decoder_spec(self) -> DecoderSpec:
        return DecoderSpec(
            vocab_size=self.vocab_size, d_model=self.hidden_size, n_layers=self.num_hidden_layers,
            n_heads=self.num_attention_heads, n_kv_heads=self.kv_heads, head_dim=self.dim_per_head,
            ffn_dim=self.intermediate_size, max_seq_len=self.max_position_embeddings, norm_eps=self.rms_norm_eps,
            final_norm="rmsnorm", final_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
            rope_interleaved=False, qkv_bias=self.attention_bias or self.qkv_bias, o_bias=self.attention_bias,
            mlp_bias=self.mlp_bias, rope_scaling=self.rope_scaling or ())

    # -- transformers config.json ------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], *, source: str = "config.json") -> LlamaConfig:
        """Reads a transformers config dict; raises naming every attribute these models cannot honour."""
        hf = dict(hf)
        if hf.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"{source}: model_type is {hf.get('model_type')!r}, expected {cls.model_type!r}")
        rope = dict(hf.pop("rope_parameters", None) or {})
        legacy = hf.pop("rope_scaling", None)
        if legacy:
            rope.update(legacy)
        theta = rope.pop("rope_theta", hf.pop("rope_theta", 10000.0))
        kind = rope.get("rope_type", rope.get("type", "default"))
        rope.pop("type", None)
        problems = []
        if kind not in _ROPE_TYPES:
            problems.append(f"rope type {kind!r} (implemented: {', '.join(_ROPE_TYPES)})")
        problems += cls._refuse(hf)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in hf if k not in fields and k not in _BOOKKEEPING)
        problems += [f"{k}={hf[k]!r}" for k in unknown]
        if problems:
            raise ValueError(f"{source}: unsupported {cls.model_type} config attributes: " + "; ".join(problems))
        kwargs = {k: v for k, v in hf.items() if k in fields}
        kwargs["rope_theta"] = float(theta)
        kwargs["rope_scaling"] = None if kind == "default" else {"rope_type": kind, **rope}
        return cls(**kwargs)

    @classmethod
    def _refuse(cls, hf: dict[str, Any]) -> list[str]:
        """Pops the attributes with a single supported value; returns the unsupported ones."""
        problems = []
        for key, ok in (("hidden_act", ("silu",)), ("pretraining_tp", (1,)), ("attention_dropout", (0, 0.0))):
            if key in hf and hf[key] not in ok:
                problems.append(f"{key}={hf[key]!r}")
            hf.pop(key, None)
        return problems

    def to_hf_config(self) -> dict[str, Any]:
        rope = {"rope_theta": self.rope_theta, **(dict(self.rope_scaling) if self.rope_scaling else
                                                   {"rope_type": "default"})}
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.dim_per_head,
            "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope, "attention_bias": self.attention_bias, "mlp_bias": self.mlp_bias,
            "hidden_act": "silu", "tie_word_embeddings": self.tie_word_embeddings, "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
        }


@dataclasses.dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    """Qwen2 / Qwen2.5 text: q/k/v biases, no o bias, no MLP bias; sliding-window attention is refused."""

    model_type = "qwen2"

    qkv_bias: bool = True

    @classmethod
    def _refuse(cls, hf: dict[str, Any]) -> list[str]:
        problems = super()._refuse(hf)
        if hf.pop("use_sliding_window", False):
            problems.append("use_sliding_window=True (sliding-window attention is not implemented)")
        for key in ("sliding_window", "max_window_layers"):
            hf.pop(key, None)
        layer_types = hf.pop("layer_types", None)
        if layer_types and any(t != "full_attention" for t in layer_types):
            problems.append(f"layer_types={sorted(set(layer_types))} (only full_attention is implemented)")
        if "attention_bias" in hf:
            problems.append(f"attention_bias={hf['attention_bias']!r} (Qwen2 has no such attribute)")
        return problems

    def to_hf_config(self) -> dict[str, Any]:
        hf = super().to_hf_config()
        for key in ("attention_bias", "mlp_bias", "head_dim"):
            hf.pop(key)
        hf.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
                  sliding_window=None, max_window_layers=self.num_hidden_layers,
                  layer_types=["full_attention"] * self.num_hidden_layers)
        return hf


class LlamaForCausalLM(Decoder):
    """`model(input_ids, attention_mask=None, labels=None)` -> ModelOutput with logits [B, T, V]."""

    def __init__(self, config: LlamaConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(config.decoder_spec(), param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.lm_head = None if config.tie_word_embeddings else Embed(
            config.vocab_size, config.hidden_size, param_dtype=param_dtype, rngs=rngs)

    @classmethod
    def from_pretrained(cls, path, *, dtype=None) -> LlamaForCausalLM:
        from jaxmodels.registry import from_pretrained

        model = from_pretrained(path, dtype=dtype)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def save_pretrained(self, path, *, overwrite: bool = True):
        return checkpoint.save_model(self, self.config, path, overwrite=overwrite)

    def get_num_params(self) -> int:
        return sum(int(v.size) for v in checkpoint.flat_params(self).values())

    def __call__(self, input_ids: jax.Array, task: str = "lm", attention_mask: jax.Array | None = None,
                 labels: jax.Array | None = None, kv_caches: KVCache | None = None, use_cache: bool = False,
                 positions: jax.Array | None = None, dropout_key: jax.Array | None = None) -> ModelOutput:
        """input_ids [B, T] -> logits [B, T, V]; labels [B, T] give the shifted LM loss."""
        if task != "lm":
            raise ValueError(f"unknown task {task!r}; valid tasks are ['lm'] (a causal decoder)")
        if use_cache and kv_caches is None:
            kv_caches = self.init_cache(input_ids.shape[0])
        x, kv_caches = self.hidden_states(input_ids, causal=True, attention_mask=attention_mask,
                                          positions=positions, kv_caches=kv_caches, dropout_key=dropout_key)
        logits = (self.embed if self.lm_head is None else self.lm_head).decode(x)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = jnp.where(attention_mask.astype(bool), labels, -100)
            loss = compute_lm_loss(logits, labels)
        return ModelOutput(logits, loss, {"hidden_states": x, "kv_caches": kv_caches})
