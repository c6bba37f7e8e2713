"""SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers.linear import Linear, fused_linear


class SwiGLU(nnx.Module):
    """gate/up kernels [D, F], down kernel [F, D]; biases optional (the original Hyformer has them)."""

    def __init__(self, d_model: int, ffn_dim: int, *, use_bias: bool, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(use_bias=use_bias, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d_model, ffn_dim, **kw)
        self.up_proj = Linear(d_model, ffn_dim, **kw)
        self.down_proj = Linear(ffn_dim, d_model, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] -> [B, T, D]."""
        gate, up = fused_linear(x, [self.gate_proj, self.up_proj])  # [B, T, F] each
        return self.down_proj(jax.nn.silu(gate) * up)
