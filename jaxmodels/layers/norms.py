"""RMSNorm and LayerNorm, computed in float32 and cast back to the input dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers.axes import param


class RMSNorm(nnx.Module):
    """w * x / sqrt(mean(x^2) + eps) over the last axis."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype=jnp.float32):
        self.weight = param(jnp.ones((dim,), param_dtype), ("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * self.weight[...].astype(x.dtype)


class OffsetRMSNorm(nnx.Module):
    """(1 + w) * x / sqrt(mean(x^2) + eps) over the last axis, the product in float32 too (Gemma); w starts at 0."""

    def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype=jnp.float32):
        self.weight = param(jnp.zeros((dim,), param_dtype), ("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)


RMS_FLAVOURS = {"standard": RMSNorm, "offset": OffsetRMSNorm}


def rms_norm(dim: int, *, flavour: str = "standard", eps: float = 1e-6, param_dtype=jnp.float32) -> nnx.Module:
    """An RMSNorm of the given flavour: "standard" (RMSNorm) or "offset" (OffsetRMSNorm)."""
    if flavour not in RMS_FLAVOURS:
        raise ValueError(f"RMSNorm flavour must be one of {sorted(RMS_FLAVOURS)}, got {flavour!r}")
    return RMS_FLAVOURS[flavour](dim, eps=eps, param_dtype=param_dtype)


class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * w + b over the last axis (biased variance, as torch.nn.LayerNorm)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, param_dtype=jnp.float32):
        self.weight = param(jnp.ones((dim,), param_dtype), ("norm",))
        self.bias = param(jnp.zeros((dim,), param_dtype), ("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...] + self.bias[...]).astype(x.dtype)
