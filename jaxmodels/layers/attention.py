"""Grouped-query self-attention with RoPE, explicit masks and an optional KV cache, in either layer path.

Optionally an RMSNorm over each query and key head before RoPE (Qwen3, Gemma 3) and a score scale other than
1/sqrt(H) (Gemma 3's query_pre_attn_scalar).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers import backend
from jaxmodels.layers.attention_core import attention_core
from jaxmodels.layers.cache import LayerCache, write_layer
from jaxmodels.layers.linear import Linear, fused_linear
from jaxmodels.layers.norms import rms_norm
from jaxmodels.layers.rope import apply_rope


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dropout_rate: float = 0.0,
           key: jax.Array | None = None, *, layers: str = "auto", scale: float | None = None) -> jax.Array:
    """Softmax attention, the softmax in float32, scores scaled by `scale` (None: 1/sqrt(H)).

    q [B, T, N, H]; k, v [B, S, K, H] with N a multiple of K; mask [B, T, S] bool (True = attend).
    Returns [B, T, N, H]. A row with nothing to attend to (a padding query) averages uniformly
    instead of producing NaN. Dropout (rate > 0 and a key) zeroes probabilities [B, K, G, T, S], with the
    same keep mask in both paths. `layers` "tuned": `attention_core` after a heads-major relayout;
    "plain": `jax.nn.dot_product_attention`, or einsums when dropout is on.
    """
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    g = n // kv_heads
    if scale is not None:  # both paths scale the scores by 1/sqrt(H): q carries the rest, the same in both
        q = q * jnp.asarray(scale * h ** 0.5, q.dtype)
    keep_scale = None
    if key is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, (b, kv_heads, g, t, s))
        keep_scale = jnp.where(keep, 1.0 / (1.0 - dropout_rate), 0.0)
    if backend.resolve(layers) == "plain":
        return _plain_attend(q, k, v, mask) if keep_scale is None else _einsum_attend(q, k, v, mask, keep_scale)
    q = q.reshape(b, t, kv_heads, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, g * t, h)  # [B, K, G*T, H]
    out = attention_core(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, keep_scale)
    return out.reshape(b, kv_heads, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def _plain_attend(q, k, v, mask):
    """`jax.nn.dot_product_attention` on [B, T, N, H], its implementation left to JAX."""
    # A query with nothing to attend to gets a zero query and every key: equal scores, hence the uniform
    # average of the tuned path, whatever an implementation makes of an all-masked row.
    live = jnp.any(mask, axis=-1)  # [B, T]
    q = jnp.where(live[:, :, None, None], q, 0)
    mask = mask | ~live[:, :, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation=None)


def _einsum_attend(q, k, v, mask, keep_scale):
    """softmax(q k^T / sqrt(H), masked) * keep_scale [B, K, G, T, S], then PV; a masked row averages uniformly."""
    b, t, n, h = q.shape
    q = q.reshape(b, t, k.shape[2], -1, h)  # [B, T, K, G, H]
    scores = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32) * h ** -0.5
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1) * keep_scale
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs.astype(v.dtype), v)
    return out.reshape(b, t, n, h).astype(v.dtype)


class Attention(nnx.Module):
    """q/k/v/o projections (kernels [D, N, H], [D, K, H], [D, K, H], [N, H, D]) around `attend`.

    qk_norm: an RMSNorm of `norm_flavour` (weights [H], shared by the heads) on q and k before RoPE.
    scale: the score scale (None: 1/sqrt(H)).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int, *, qkv_bias: bool = False,
                 o_bias: bool = False, rope_interleaved: bool, attn_dropout: float = 0.0, qk_norm: bool = False,
                 norm_flavour: str = "standard", norm_eps: float = 1e-6, scale: float | None = None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        q_axes, kv_axes = ("embed", "heads", "head_dim"), ("embed", "kv_heads", "head_dim")
        self.q_proj = Linear(d_model, (n_heads, head_dim), use_bias=qkv_bias, axes=q_axes, **kw)
        self.k_proj = Linear(d_model, (n_kv_heads, head_dim), use_bias=qkv_bias, axes=kv_axes, **kw)
        self.v_proj = Linear(d_model, (n_kv_heads, head_dim), use_bias=qkv_bias, axes=kv_axes, **kw)
        self.o_proj = Linear((n_heads, head_dim), d_model, use_bias=o_bias, axes=("heads", "head_dim", "embed"), **kw)
        norm = dict(flavour=norm_flavour, eps=norm_eps, param_dtype=param_dtype)
        self.q_norm = rms_norm(head_dim, **norm) if qk_norm else None
        self.k_norm = rms_norm(head_dim, **norm) if qk_norm else None
        self.scale = scale
        self.rope_interleaved = rope_interleaved
        self.attn_dropout = attn_dropout

    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array, inv_freq: jax.Array,
                 cache: LayerCache | None = None, cache_index: jax.Array | None = None,
                 dropout_key: jax.Array | None = None, *, layers: str = "auto") -> tuple[jax.Array, LayerCache | None]:
        """x [B, T, D], positions [B, T], mask [B, T, S] -> ([B, T, D], updated cache).

        Without a cache S = T; with one, k/v are written at cache_index and S is the cache length.
        `layers` "auto", "tuned" or "plain" (`jaxmodels.layers.backend`) for every op of the layer.
        """
        layers = backend.resolve(layers)
        q, k, v = fused_linear(x, [self.q_proj, self.k_proj, self.v_proj], layers=layers)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # over H, per head
        q = apply_rope(q, positions, inv_freq, interleaved=self.rope_interleaved, layers=layers)
        k = apply_rope(k, positions, inv_freq, interleaved=self.rope_interleaved, layers=layers)
        if cache is not None:
            cache = write_layer(cache, cache_index, k, v)
            k, v = cache.k, cache.v
        out = attend(q, k, v, mask, self.attn_dropout, dropout_key, layers=layers, scale=self.scale)
        return self.o_proj(out, layers=layers), cache
