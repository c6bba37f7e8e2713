"""Block RMSNorm without a gain: every contiguous block of `block_size` features is divided by its RMS.

y[b] = x[b] / sqrt(mean(x[b]^2) + eps) for each block b of the last axis; a last, shorter block (when the width
is not a multiple of block_size) is normalised over its own length. block_size 0 or None disables it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(width: int, block_size: int | None, eps: float) -> None:
    if block_size is not None and block_size < 0:
        raise ValueError(f"block_rmsnorm: block_size must be >= 0 (0 or None disables), got {block_size}")
    if eps < 0:
        raise ValueError(f"block_rmsnorm: eps must be >= 0, got {eps}")


def block_rmsnorm_host(x: np.ndarray, block_size: int | None, eps: float = 1e-6) -> np.ndarray:
    """NumPy block RMSNorm of x of shape [..., F]; returns float32 (float64 stays float64)."""
    x = np.asarray(x)
    _check(x.shape[-1], block_size, eps)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    y = x.astype(dtype, copy=True)
    if not block_size:
        return y
    width = y.shape[-1]
    full = width // block_size * block_size
    if full:
        v = y[..., :full].reshape(*y.shape[:-1], width // block_size, block_size)  # [..., blocks, block_size]
        v /= np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)
        y[..., :full] = v.reshape(*y.shape[:-1], full)
    if full < width:
        t = y[..., full:]
        y[..., full:] = t / np.sqrt(np.mean(t * t, axis=-1, keepdims=True) + eps)
    return y


def block_rmsnorm_jax(x: jax.Array, block_size: int | None, eps: float = 1e-6) -> jax.Array:
    """Jittable block RMSNorm of x of shape [..., F] (same semantics as block_rmsnorm_host)."""
    x = jnp.asarray(x)
    _check(x.shape[-1], block_size, eps)
    if not block_size:
        return x
    width = x.shape[-1]
    full = width // block_size * block_size
    parts = []
    if full:
        v = x[..., :full].reshape(*x.shape[:-1], width // block_size, block_size)
        v = v * jax.lax.rsqrt(jnp.mean(v * v, axis=-1, keepdims=True) + eps)
        parts.append(v.reshape(*x.shape[:-1], full))
    if full < width:
        t = x[..., full:]
        parts.append(t * jax.lax.rsqrt(jnp.mean(t * t, axis=-1, keepdims=True) + eps))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def block_rmsnorm(x, block_size: int | None, eps: float = 1e-6):
    """Block RMSNorm over the last axis: JAX for jax arrays, NumPy otherwise."""
    if isinstance(x, jax.Array):
        return block_rmsnorm_jax(x, block_size, eps)
    return block_rmsnorm_host(x, block_size, eps)
