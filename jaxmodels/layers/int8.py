"""Symmetric int8 weights and their dequantisation: the array math under `jaxmodels.quantize`.

A weight is quantised along its rows [N, K] (N output channels, K inputs: PyTorch's layout, an embedding's
[V, D]), in blocks of `block` consecutive inputs: q = round(w / d) with d = max|block| / 127, so q lies in
[-127, 127] and w ~ q * d. Two block sizes:

* the whole row (`block=None`): one float32 scale per output channel, scale [N];
* 32 (`block=BLOCK`): llama.cpp's Q8_0, one float16 scale per 32 inputs, scale [N, K/32]. The values are
  bit for bit what `gguf.quants.quantize(w, Q8_0)` stores: d and its reciprocal in float32, rounding half away
  from zero (ggml's `roundf`), d rounded to float16 only when stored.

A Linear kernel is [K, N] (inputs first): its scales are the transposes, [N] or [K/32, N] (`kn` below).
Dequantisation is q * d in float32, the product `gguf.quants.dequantize` computes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 32  # Q8_0's block: the decode kernels' block of rows ("kn") and tile ("nk")


def check_block(block: int | None) -> None:
    if block not in (None, BLOCK):
        raise ValueError(f"block_size must be None (a scale per output channel) or {BLOCK} (Q8_0), got {block!r}")


def _roundf(v: jax.Array) -> jax.Array:
    """Round half away from zero, as gguf's np_roundf (exactly: every step is exact in float32)."""
    a = jnp.abs(v)
    floored = jnp.floor(a)
    return jnp.sign(v) * (floored + jnp.floor(2 * (a - floored)))


def _steps(amax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d, 1/d) for each block's max |w| in float32, on the host: XLA rewrites a division by a scalar as a
    multiplication by its reciprocal, which is not correctly rounded and moved 1 in 10^6 values by one step."""
    d = np.asarray(amax, np.float32) / np.float32(127)  # NumPy's division, whatever array type the callback gets
    with np.errstate(divide="ignore"):
        return d, np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def quantize_rows(w: jax.Array, block: int | None) -> tuple[jax.Array, jax.Array]:
    """w [N, K] float -> (q [N, K] int8, scale [N] float32 or, block 32, [N, K/32] float16)."""
    check_block(block)
    n, k = w.shape
    if block is not None and k % block:
        raise ValueError(f"Q8_0 blocks need rows of a multiple of {block} values, got [N, K] = {list(w.shape)}")
    size = k if block is None else block
    blocks = w.astype(jnp.float32).reshape(n, k // size, size)
    amax = jnp.max(jnp.abs(blocks), axis=-1, keepdims=True)  # [N, K/size, 1]
    d, inv = jax.pure_callback(_steps, (jax.ShapeDtypeStruct(amax.shape, jnp.float32),) * 2, amax)
    q = _roundf(blocks * inv).astype(jnp.int8).reshape(n, k)
    return q, (d[:, 0, 0] if block is None else d[..., 0].astype(jnp.float16))


def dequantize_rows(q: jax.Array, scale: jax.Array) -> jax.Array:
    """q [..., K] int8 and scale [...] (per row) or [..., K/32] (blocks) -> w [..., K] float32."""
    if scale.ndim == q.ndim - 1:
        return q.astype(jnp.float32) * scale.astype(jnp.float32)[..., None]
    blocks = q.astype(jnp.float32).reshape(*scale.shape, -1) * scale.astype(jnp.float32)[..., None]
    return blocks.reshape(q.shape)


def quantize_kn(w: jax.Array, block: int | None) -> tuple[jax.Array, jax.Array]:
    """A kernel w [K, N] -> (q [K, N] int8, scale [N] float32 or [K/32, N] float16)."""
    q, scale = quantize_rows(w.T, block)
    return q.T, scale if scale.ndim == 1 else scale.T


def dequantize_kn(q: jax.Array, scale: jax.Array) -> jax.Array:
    """q [K, N] int8 and scale [N] or [K/32, N] -> w [K, N] float32."""
    return dequantize_rows(q.T, scale if scale.ndim == 1 else scale.T).T


def scale_shape(k: int, out_shape: tuple[int, ...], block: int | None) -> tuple[int, ...]:
    """The scale's shape for a kernel [*in, *out_shape] of K inputs: out_shape, or [K/32, *out_shape]."""
    return tuple(out_shape) if block is None else (k // block, *out_shape)
