"""Linear projections and the token embedding, laid out for einsum-style heads.

A `Linear` kernel has shape `in_shape + out_shape` (e.g. [D, N, H] for a query projection, [N, H, D] for
the output projection), the JAX convention; PyTorch's `nn.Linear.weight` is its flattened transpose.
Conversion tables name that transform explicitly. Each layer runs its "tuned" or "plain" form
(`jaxmodels.layers.backend`, docs/layers.md); a module's `layers` attribute is the default for its calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers import backend, dense, skinny

_INIT_STD = 0.02


def _shape(s: int | Sequence[int]) -> tuple[int, ...]:
    return (s,) if isinstance(s, int) else tuple(s)


class Linear(nnx.Module):
    """y = x @ kernel + bias, with kernel of shape [*in_shape, *out_shape] and bias of shape out_shape."""

    def __init__(self, in_shape, out_shape, *, use_bias: bool = False, param_dtype=jnp.float32,
                 init_std: float = _INIT_STD, layers: str = "auto", rngs: nnx.Rngs):
        self.in_shape, self.out_shape = _shape(in_shape), _shape(out_shape)
        self.layers = backend.check(layers)
        key = rngs.params()
        self.kernel = nnx.Param(init_std * jax.random.normal(key, self.in_shape + self.out_shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros(self.out_shape, param_dtype)) if use_bias else None

    def flat_kernel(self) -> jax.Array:
        """The kernel as a matrix [prod(in_shape), prod(out_shape)]."""
        return self.kernel[...].reshape(math.prod(self.in_shape), math.prod(self.out_shape))

    def flat_bias(self) -> jax.Array | None:
        return None if self.bias is None else self.bias[...].reshape(-1)

    def __call__(self, x: jax.Array, *, layers: str | None = None) -> jax.Array:
        """x of shape [..., *in_shape] -> [..., *out_shape]; `layers` None: this module's `layers`."""
        return fused_linear(x, [self], layers=self.layers if layers is None else layers)[0]


def fused_linear(x: jax.Array, linears: Sequence[Linear], *, layers: str = "auto") -> list[jax.Array]:
    """Several projections of the same input: x [..., *in_shape] -> one array [..., *out_shape] per projection.

    Tuned: one dot per projection inside one custom VJP (`dense.projections`), which shares x's transpose
    between the weight gradients and sums dx; inputs of few rows (decode steps) go to the CPU kernels
    (`skinny.projections`), which read each kernel in its stored dtype. Plain: one contraction per projection, differentiated by JAX.
    Either way there is no kernel concatenation per call, and storage stays one parameter per projection,
    so checkpoints keep the original's separate keys.
    """
    in_shape = linears[0].in_shape
    if any(p.in_shape != in_shape for p in linears):
        raise ValueError(f"fused_linear needs projections of one input shape, got {[p.in_shape for p in linears]}")
    if backend.resolve(layers) == "plain":
        return [_plain_linear(x, p) for p in linears]
    lead = x.shape[: x.ndim - len(in_shape)]
    x = x.reshape(*lead, -1)
    if skinny.applies(x, 1):  # a decode step: the CPU kernels read each kernel once, in its stored dtype
        outs = skinny.projections(x, tuple(p.flat_kernel() for p in linears), tuple(p.flat_bias() for p in linears))
        return [y.reshape(*lead, *p.out_shape) for y, p in zip(outs, linears)]
    kernels = tuple(p.flat_kernel().astype(x.dtype) for p in linears)
    biases = tuple(None if p.bias is None else p.flat_bias().astype(x.dtype) for p in linears)
    return [y.reshape(*lead, *p.out_shape) for y, p in zip(dense.projections(x, kernels, biases), linears)]


def _plain_linear(x: jax.Array, p: Linear) -> jax.Array:
    """x [..., *in_shape] contracted with the kernel [*in_shape, *out_shape] -> [..., *out_shape]."""
    y = jnp.tensordot(x, p.kernel[...].astype(x.dtype), axes=len(p.in_shape))
    return y if p.bias is None else y + p.bias[...].astype(x.dtype)


class Embed(nnx.Module):
    """Token embedding [V, D]; `decode` reuses it as the tied output head."""

    def __init__(self, vocab_size: int, dim: int, *, param_dtype=jnp.float32, layers: str = "auto",
                 rngs: nnx.Rngs):
        self.layers = backend.check(layers)
        self.weight = nnx.Param(_INIT_STD * jax.random.normal(rngs.params(), (vocab_size, dim), param_dtype))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids [B, T] int -> [B, T, D]."""
        return jnp.take(self.weight[...], ids, axis=0)

    def decode(self, x: jax.Array, *, layers: str | None = None) -> jax.Array:
        """x [B, T, D] -> logits [B, T, V], tied to the embedding by construction.

        `layers` None: this module's `layers`.
        """
        if backend.resolve(self.layers if layers is None else layers) == "plain":
            return jnp.einsum("...D,VD->...V", x, self.weight[...].astype(x.dtype))
        if skinny.applies(x, 1):  # a decode step: the weight [V, D] read once, in its stored dtype
            return skinny.matmul_t(x, self.weight[...])
        return dense.matmul_t(x, self.weight[...].astype(x.dtype))
