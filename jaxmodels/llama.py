"""Llama-family causal decoders (Llama, Qwen2 / Qwen2.5 text, Qwen3, Mistral) on the shared Hyformer layers.

Half-split RoPE with `rope_theta` and optional linear / llama3 scaling, grouped-query attention, optional
q/k/v (Qwen2) or q/k/v/o (Llama `attention_bias`) biases, RMSNorm, tied or untied output head; Qwen3 adds an
RMSNorm on each q and k head, Qwen3 and Mistral sliding-window attention. Gemma 3 (jaxmodels.gemma3) builds on
these classes. `from_hf_config` reads a transformers config.json and refuses every attribute it cannot honour.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels import checkpoint
from jaxmodels.family import Family, register
from jaxmodels.config import ConfigMixin, build, check_numbers, check_positive_ints
from jaxmodels.hf.config_policy import HFConfigReader
from jaxmodels.hyformer import ModelOutput
from jaxmodels.layers.cache import KVCache
from jaxmodels.layers.decoder import LAYER_TYPES, Decoder, DecoderSpec
from jaxmodels.layers.linear import Embed
from jaxmodels.hf.tables import LLAMA, KeyTable
from jaxmodels.losses import compute_lm_loss
from jaxmodels.pretrained import Pretrained

# rope_parameters keys that transformers' rotary embedding reads, per rope type.
_ROPE_KEYS = {"default": ("rope_theta", "partial_rotary_factor"),
              "linear": ("rope_theta", "partial_rotary_factor", "factor"),
              "llama3": ("rope_theta", "partial_rotary_factor", "factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings")}
# The attributes transformers' LlamaForCausalLM reads that map onto our fields (generation ids ride along).
_LLAMA_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias",
                 "mlp_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
_LLAMA_FIXED = {"hidden_act": ("silu",), "attention_dropout": (0, 0.0)}


def _rope(hf: dict[str, Any]) -> tuple[float, dict | None, list[str], dict[str, Any]]:
    """Pops the rope attributes (transformers 5's `rope_parameters`, or the older `rope_theta` / `rope_scaling`)
    -> (theta, scaling or None, problems, ignored)."""
    rope = dict(hf.pop("rope_parameters", None) or {})
    rope.update(hf.pop("rope_scaling", None) or {})
    theta = rope.pop("rope_theta", hf.pop("rope_theta", 10000.0))
    if isinstance(theta, (int, float)) and not isinstance(theta, bool):
        theta = float(theta)  # anything else reaches the config's field check, which names the file and key
    kind = rope.pop("rope_type", rope.pop("type", "default"))
    if kind not in _ROPE_KEYS:
        return theta, None, [f"rope type {kind!r} (implemented: {', '.join(_ROPE_KEYS)})"], {}
    problems, ignored = [], {}
    if rope.pop("partial_rotary_factor", 1.0) != 1.0:
        problems.append("partial_rotary_factor (only 1.0, rotating the whole head, is implemented)")
    for key in list(rope):
        if key not in _ROPE_KEYS[kind]:
            ignored[f"rope_parameters.{key}"] = rope.pop(key)
    return theta, (None if kind == "default" else {"rope_type": kind, **rope}), problems, ignored


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
        check_positive_ints(self, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "max_position_embeddings"),
                            optional=("num_key_value_heads", "head_dim"))
        check_numbers(self, ("rms_norm_eps", "rope_theta"))
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

    @classmethod
    def tiny(cls, **kw) -> LlamaConfig:
        """Prime, pairwise-distinct dimensions with grouped-query attention, for tests."""
        return cls(**{**dict(vocab_size=53, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128), **kw})

    def decoder_spec(self) -> DecoderSpec:
        return DecoderSpec(
            vocab_size=self.vocab_size, d_model=self.hidden_size, n_layers=self.num_hidden_layers,
            n_heads=self.num_attention_heads, n_kv_heads=self.kv_heads, head_dim=self.dim_per_head,
            ffn_dim=self.intermediate_size, max_seq_len=self.max_position_embeddings, norm_eps=self.rms_norm_eps,
            final_norm="rmsnorm", final_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
            rope_interleaved=False, qkv_bias=self.attention_bias or self.qkv_bias, o_bias=self.attention_bias,
            mlp_bias=self.mlp_bias, rope_scaling=self.rope_scaling or ())

    # -- transformers config.json ------------------------------------------------------------------
    _hf_fields: ClassVar[tuple[str, ...]] = _LLAMA_FIELDS

    _hf_fixed: ClassVar[dict[str, tuple]] = _LLAMA_FIXED

    @classmethod
    def read_hf_config(cls, hf: dict[str, Any], source: str = "config.json") -> tuple[LlamaConfig, dict[str, Any]]:
        """A transformers config dict -> (config, ignored attributes), by jaxmodels.hf.config_policy: refuses,
        naming them, the attributes the transformers model reads with values not implemented here."""
        hf = dict(hf)
        if hf.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"{source}: model_type is {hf.get('model_type')!r}, expected {cls.model_type!r}")
        hf.pop("model_type", None)
        rope_values, problems, rope_ignored = cls._read_rope(hf)
        layer_values, layer_problems = cls._read_layers(hf)
        reader = HFConfigReader(cls.model_type, {k: k for k in cls._hf_fields}, cls._hf_fixed)
        values, ignored = reader.read(hf, source=source, problems=problems + layer_problems)
        config = build(cls, {**cls._hf_defaults(), **values, **rope_values, **layer_values}, source)
        return config, {**ignored, **rope_ignored}

    @classmethod
    def _hf_defaults(cls) -> dict[str, Any]:
        """Field values where transformers' default differs from ours, for a config.json that leaves them out."""
        return {}

    @classmethod
    def _read_rope(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Pops the rope attributes -> (our fields, problems, ignored)."""
        theta, scaling, problems, ignored = _rope(hf)
        return {"rope_theta": theta, "rope_scaling": scaling}, problems, ignored

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], *, source: str = "config.json") -> LlamaConfig:
        """Reads a transformers config dict; raises naming every attribute these models cannot honour."""
        return cls.read_hf_config(hf, source)[0]

    @classmethod
    def _read_layers(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Pops the per-layer attention attributes the family's transformers model reads -> (our fields,
        problems). Llama reads none."""
        return {}, []

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

    _hf_fields: ClassVar[tuple[str, ...]] = tuple(k for k in _LLAMA_FIELDS
                                                 if k not in ("attention_bias", "mlp_bias"))

    @classmethod
    def _read_layers(cls, hf: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        problems = []
        layer_types = hf.pop("layer_types", None)
        if hf.pop("use_sliding_window", False):
            problems.append("use_sliding_window=True (sliding-window attention is not implemented)")
        if layer_types and any(t != "full_attention" for t in layer_types):
            problems.append(f"layer_types={sorted(set(layer_types))} (only full_attention is implemented)")
        return {}, problems

    def to_hf_config(self) -> dict[str, Any]:
        hf = super().to_hf_config()
        for key in ("attention_bias", "mlp_bias"):
            hf.pop(key)
        if self.head_dim is None:
            hf.pop("head_dim")
        hf.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
                  sliding_window=None, max_window_layers=self.num_hidden_layers,
                  layer_types=["full_attention"] * self.num_hidden_layers)
        return hf


class LlamaForCausalLM(Pretrained, Decoder):
    """`model(input_ids, attention_mask=None, labels=None)` -> ModelOutput with logits [B, T, V]."""

    def __init__(self, config: LlamaConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(config.decoder_spec(), param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.lm_head = None if config.tie_word_embeddings else Embed(
            config.vocab_size, config.hidden_size, param_dtype=param_dtype, rngs=rngs)

    def get_num_params(self) -> int:
        return sum(int(v.size) for v in checkpoint.flat_params(self).values())

    def head_logits(self, x: jax.Array) -> jax.Array:
        """Final-normed hidden states [..., D] (from `hidden_states`) -> logits [..., V]: the LM head (the tied
        embedding or lm_head) and the final logit softcap when the family has one."""
        logits = (self.embed if self.lm_head is None else self.lm_head).decode(x, layers=self.spec.layers)
        if self.spec.logit_softcap is not None:
            logits = jnp.tanh(logits / self.spec.logit_softcap) * self.spec.logit_softcap
        return logits

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
        logits = self.head_logits(x)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = jnp.where(attention_mask.astype(bool), labels, -100)
            loss = compute_lm_loss(logits, labels)
        return ModelOutput(logits, loss, {"hidden_states": x, "kv_caches": kv_caches})


def lm_head_tie(config: LlamaConfig) -> dict[str, str]:
    """A tied checkpoint may still store lm_head.weight: a copy of the embedding."""
    return {"lm_head.weight": "model.embed_tokens.weight"} if config.tie_word_embeddings else {}


def causal_lm_family(config_class: type[LlamaConfig], model_class: type = LlamaForCausalLM,
                     table: KeyTable = LLAMA) -> Family:
    """The family record of a LlamaConfig subclass and its model class (a LlamaForCausalLM)."""
    return Family(name=config_class.model_type, config_class=config_class, model_classes=(model_class,),
                  table=table, from_hf=config_class.read_hf_config, to_hf=lambda config, cls: config.to_hf_config(),
                  tied=lm_head_tie, presets={"tiny": config_class.tiny})


def read_layer_types(layer_types, sliding_window) -> tuple[dict[str, Any], list[str]]:
    """transformers' `layer_types` list and effective `sliding_window` -> (our fields, problems)."""
    layer_types = tuple(layer_types)
    problems = []
    unknown = sorted(set(layer_types) - set(LAYER_TYPES))
    if unknown:
        problems.append(f"layer_types {unknown} (implemented: {', '.join(LAYER_TYPES)})")
    if "sliding_attention" in layer_types and not (isinstance(sliding_window, int) and sliding_window >= 1):
        problems.append(f"sliding_window={sliding_window!r} with sliding_attention layers (a window of at least "
                        f"one token is needed)")
    if all(t == "full_attention" for t in layer_types):
        layer_types = ()  # our spelling of "every layer full_attention"
    return {"layer_types": layer_types, "sliding_window": sliding_window}, problems


LLAMA_FAMILY = register(causal_lm_family(LlamaConfig))
QWEN2_FAMILY = register(causal_lm_family(Qwen2Config))
