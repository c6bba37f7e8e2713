"""Rotary position embeddings, in both pairings.

* interleaved (GPT-J, the original Hyformer): pairs (x[2i], x[2i+1]);
* half-split (GPT-NeoX, Llama and Qwen2 in transformers): pairs (x[i], x[i + H/2]).
Angles are computed in float32 from explicit positions, so padding-aware positions work unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_frequencies(head_dim: int, theta: float = 10000.0) -> jax.Array:
    """theta^(-2i/H) for i < H/2, of shape [H/2], float32."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array, *, interleaved: bool) -> jax.Array:
    """Rotates x [B, T, N, H] by angles positions [B, T] * inv_freq [H/2]; returns x's dtype."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, H/2]
    sin = jnp.sin(angles)[:, :, None, :]
    xf = x.astype(jnp.float32)
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        x1, x2 = xf[..., :half], xf[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
