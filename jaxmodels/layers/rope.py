"""Rotary position embeddings, in both pairings.

* interleaved (GPT-J, the original Hyformer): pairs (x[2i], x[2i+1]);
* half-split (GPT-NeoX, Llama and Qwen2 in transformers): pairs (x[i], x[i + H/2]).
Angles are computed in float32 from explicit positions, so padding-aware positions work unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmodels.layers import backend


def inverse_frequencies(head_dim: int, theta: float = 10000.0) -> jax.Array:
    """theta^(-2i/H) for i < H/2, of shape [H/2], float32."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array, *, interleaved: bool,
               layers: str = "auto") -> jax.Array:
    """Rotates x [B, T, N, H] by angles positions [B, T] * inv_freq [H/2]; returns x's dtype.

    `layers` "tuned" computes the cos/sin table as a reduction (docs/layers.md), "plain" directly; the
    values are the same.
    """
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    if backend.resolve(layers) == "tuned":
        table = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # [B, T, H/2, 2]
        # Summed with a zero partner (exact): a reduction ends an XLA:CPU fusion, so the table is computed
        # once per call instead of once per element of x.
        table = jnp.sum(table[..., None] * jnp.array([1.0, 0.0], jnp.float32), axis=-1)
        cos, sin = table[:, :, None, :, 0], table[:, :, None, :, 1]  # [B, T, 1, H/2]
    else:
        cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]  # [B, T, 1, H/2]
    xf = x.astype(jnp.float32)
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        x1, x2 = xf[..., :half], xf[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def scaled_inverse_frequencies(head_dim: int, theta: float, scaling: dict | None) -> jax.Array:
    """inverse_frequencies with a Hugging Face rope scaling applied; scaling None or type "default": none.

    Implemented types: "linear" (divide every frequency by `factor`) and "llama3" (divide the low
    frequencies by `factor`, keep the high ones, interpolate smoothly between; Llama 3.1 and later).
    """
    inv_freq = inverse_frequencies(head_dim, theta)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * jnp.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return jnp.where(medium, smoothed, scaled)
    raise ValueError(f"rope scaling type {kind!r} is not implemented; implemented: default, linear, llama3")
