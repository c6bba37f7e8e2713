"""The shared decoder stack: embedding, pre-norm blocks, final norm, masks, positions and the KV cache.

Hyformer and the Llama-family models are this stack with different settings (`DecoderSpec`) and heads.
`DecoderSpec.layers` picks the layers' implementation ("auto", "tuned" or "plain"; docs/layers.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.layers import backend
from jaxmodels.layers.attention import Attention
from jaxmodels.layers.cache import KVCache
from jaxmodels.layers.dropout import dropout
from jaxmodels.layers.linear import Embed, Linear
from jaxmodels.layers.mlp import SwiGLU
from jaxmodels.layers.norms import LayerNorm, RMSNorm
from jaxmodels.layers.rope import scaled_inverse_frequencies


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """Everything the stack needs; each model family's config maps onto one of these."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    max_seq_len: int
    norm_eps: float = 1e-6
    final_norm: str = "rmsnorm"  # "rmsnorm" | "layernorm"
    final_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_interleaved: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_scaling: tuple[tuple[str, object], ...] = ()  # Hugging Face rope_parameters as sorted items
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    layers: str = "auto"  # "auto" | "tuned" | "plain", resolved at trace time (jaxmodels.layers.backend)

    def __post_init__(self):
        backend.check(self.layers, source="DecoderSpec.layers")


class Block(nnx.Module):
    """x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x)); dropout on both residual branches."""

    def __init__(self, spec: DecoderSpec, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(spec.d_model, eps=spec.norm_eps, param_dtype=param_dtype)
        self.attn = Attention(spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim, qkv_bias=spec.qkv_bias,
                              o_bias=spec.o_bias,
                              rope_interleaved=spec.rope_interleaved, attn_dropout=spec.attn_dropout,
                              param_dtype=param_dtype, rngs=rngs)
        self.post_attn_norm = RMSNorm(spec.d_model, eps=spec.norm_eps, param_dtype=param_dtype)
        self.mlp = SwiGLU(spec.d_model, spec.ffn_dim, use_bias=spec.mlp_bias, param_dtype=param_dtype, rngs=rngs)
        self.resid_dropout = spec.resid_dropout

    def __call__(self, x, positions, mask, inv_freq, cache=None, cache_index=None, key=None, *, layers="auto"):
        k_probs, k_attn, k_mlp = jax.random.split(key, 3) if key is not None else (None, None, None)
        h, cache = self.attn(self.input_norm(x), positions, mask, inv_freq, cache, cache_index, k_probs,
                             layers=layers)
        x = x + dropout(h, self.resid_dropout, k_attn)
        x = x + dropout(self.mlp(self.post_attn_norm(x), layers=layers), self.resid_dropout, k_mlp)
        return x, cache


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class Decoder(nnx.Module):
    """embed -> blocks -> final_norm. Subclasses add heads."""

    def __init__(self, spec: DecoderSpec, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.spec = spec
        self.embed = Embed(spec.vocab_size, spec.d_model, param_dtype=param_dtype, layers=spec.layers, rngs=rngs)
        self.blocks = nnx.List([Block(spec, param_dtype=param_dtype, rngs=rngs) for _ in range(spec.n_layers)])
        if spec.final_norm == "layernorm":
            self.final_norm = LayerNorm(spec.d_model, eps=spec.final_norm_eps, param_dtype=param_dtype)
        elif spec.final_norm == "rmsnorm":
            self.final_norm = RMSNorm(spec.d_model, eps=spec.final_norm_eps, param_dtype=param_dtype)
        else:
            raise ValueError(f"final_norm must be 'rmsnorm' or 'layernorm', got {spec.final_norm!r}")

    def use_layers(self, layers: str) -> Decoder:
        """Switches this model to the "auto", "tuned" or "plain" layers, in place; returns the model.

        Replaces `spec` (which the stack's layers follow) and sets `layers` on every `Linear` and `Embed` of
        the model, so that heads a subclass calls itself (a tied or untied LM head) follow too. The spec is
        part of the graph definition: jitted functions of the model retrace.
        """
        backend.check(layers)
        self.spec = dataclasses.replace(self.spec, layers=layers)
        for _, module in nnx.iter_modules(self):
            if isinstance(module, (Linear, Embed)):
                module.layers = layers
        return self

    def init_cache(self, batch: int, max_len: int | None = None, dtype=None) -> KVCache:
        """An empty cache for `batch` rows and `max_len` slots (default and upper bound: max_seq_len)."""
        max_len = self.spec.max_seq_len if max_len is None else max_len
        if max_len > self.spec.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len={self.spec.max_seq_len}")
        return KVCache.create(n_layers=self.spec.n_layers, batch=batch, max_len=max_len,
                              n_kv_heads=self.spec.n_kv_heads, head_dim=self.spec.head_dim,
                              dtype=dtype or self.embed.weight[...].dtype)

    def _check_inputs(self, input_ids, attention_mask, kv_caches):
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be an integer array of shape [B, T], got {input_ids.dtype} "
                             f"of shape {tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        limit = kv_caches.max_len if kv_caches is not None else self.spec.max_seq_len
        if t > limit:
            raise ValueError(f"sequence length {t} exceeds the {'cache length' if kv_caches else 'max_seq_len'} "
                             f"{limit}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected the shape of "
                             f"input_ids {tuple(input_ids.shape)}")
        if _is_concrete(input_ids) and input_ids.size:
            ids = np.asarray(input_ids)  # host copy: a jax reduction would be traced when called inside jit
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.spec.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.spec.vocab_size}) (vocab_size); "
                                 f"got values from {lo} to {hi}")

    def hidden_states(self, input_ids: jax.Array, *, causal: bool, attention_mask: jax.Array | None = None,
                      positions: jax.Array | None = None, kv_caches: KVCache | None = None,
                      dropout_key: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """input_ids [B, T] -> (final-normed hidden states [B, T, D], updated cache or None).

        attention_mask [B, T] (1 = real token, 0 = padding) masks padding keys. Positions default to
        the count of real tokens before each one (so left padding does not shift RoPE), continuing
        from the tokens already in the cache.
        """
        self._check_inputs(input_ids, attention_mask, kv_caches)
        b, t = input_ids.shape
        token_mask = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        if kv_caches is not None and not causal:
            raise ValueError("a KV cache is only used by the causal task 'lm'")
        if positions is None:
            before = 0 if kv_caches is None else jnp.sum(kv_caches.key_mask, axis=1, dtype=jnp.int32)[:, None]
            positions = jnp.maximum(jnp.cumsum(token_mask, axis=1, dtype=jnp.int32) - 1, 0) + before
        if kv_caches is None:
            key_mask, q_slots, k_slots, index = token_mask, jnp.arange(t), jnp.arange(t), None
        else:
            kv_caches = kv_caches.with_tokens(token_mask)
            index = kv_caches.index
            key_mask, q_slots, k_slots = kv_caches.key_mask, index + jnp.arange(t), jnp.arange(kv_caches.max_len)
        mask = jnp.broadcast_to(key_mask[:, None, :], (b, t, key_mask.shape[1]))  # [B, T, S]
        if causal:
            mask = mask & (k_slots[None, :] <= q_slots[:, None])[None]

        layers = backend.resolve(self.spec.layers)
        inv_freq = scaled_inverse_frequencies(self.spec.head_dim, self.spec.rope_theta, dict(self.spec.rope_scaling))
        x = self.embed(input_ids)
        keys = [None] * len(self.blocks) if dropout_key is None else list(jax.random.split(dropout_key, len(self.blocks)))
        new_layers = []
        for i, block in enumerate(self.blocks):
            layer_cache = None if kv_caches is None else kv_caches.layers[i]
            x, layer_cache = block(x, positions, mask, inv_freq, layer_cache, index, keys[i], layers=layers)
            new_layers.append(layer_cache)
        x = self.final_norm(x)
        if kv_caches is not None:
            kv_caches = dataclasses.replace(kv_caches, layers=new_layers, index=kv_caches.index + t)
        return x, kv_caches
