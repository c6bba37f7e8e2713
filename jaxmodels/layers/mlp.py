"""Gated feed-forward: down(act(gate(x)) * up(x)), in the tuned or the plain layer path.

act is silu (SwiGLU: Llama, Qwen, Mistral, Hyformer) or the tanh approximation of gelu (GeGLU: Gemma 3,
transformers' `gelu_pytorch_tanh`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers import backend
from jaxmodels.layers.linear import Linear, fused_linear


@jax.custom_vjp
def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """silu(gate) * up, elementwise over [..., F], with a hand-written backward (the tuned path).

    The backward reads gate and up once and writes both gradients in one pass (autodiff keeps sigmoid and
    silu as extra [..., F] residuals).
    """
    return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_bwd(res, d_out):
    gate, up = res
    sig = jax.nn.sigmoid(gate)
    d_gate = d_out * up * sig * (1 + gate * (1 - sig))  # d silu(g)/dg = sigmoid(g) (1 + g (1 - sigmoid(g)))
    d_up = d_out * gate * sig
    return d_gate, d_up


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


ACTIVATIONS = ("silu", "gelu_tanh")


class GatedMLP(nnx.Module):
    """gate/up kernels [D, F], down kernel [F, D]; biases optional (the original Hyformer has them).

    activation "silu" or "gelu_tanh" (see the module docstring).
    """

    def __init__(self, d_model: int, ffn_dim: int, *, use_bias: bool, activation: str = "silu",
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        kw = dict(use_bias=use_bias, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d_model, ffn_dim, axes=("embed", "mlp"), **kw)
        self.up_proj = Linear(d_model, ffn_dim, axes=("embed", "mlp"), **kw)
        self.down_proj = Linear(ffn_dim, d_model, axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array, *, layers: str = "auto") -> jax.Array:
        """x [B, T, D] -> [B, T, D]; `layers` "auto", "tuned" or "plain" (`jaxmodels.layers.backend`)."""
        layers = backend.resolve(layers)
        gate, up = fused_linear(x, [self.gate_proj, self.up_proj], layers=layers)  # [B, T, F] each
        if self.activation == "gelu_tanh":  # autodiff in both paths: only SwiGLU has a tuned backward
            hidden = jax.nn.gelu(gate, approximate=True) * up
        else:
            hidden = swiglu(gate, up) if layers == "tuned" else jax.nn.silu(gate) * up
        return self.down_proj(hidden, layers=layers)
