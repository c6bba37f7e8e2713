"""Linear projections and the token embedding, laid out for einsum-style heads.

A `Linear` kernel has shape `in_shape + out_shape` (e.g. [D, N, H] for a query projection, [N, H, D] for
the output projection), the JAX convention; PyTorch's `nn.Linear.weight` is its flattened transpose.
Conversion tables name that transform explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.layers.dense import affine, matmul, matmul_t

_INIT_STD = 0.02


def _shape(s: int | Sequence[int]) -> tuple[int, ...]:
    return (s,) if isinstance(s, int) else tuple(s)


class Linear(nnx.Module):
    """y = x @ kernel + bias, with kernel of shape [*in_shape, *out_shape] and bias of shape out_shape."""

    def __init__(self, in_shape, out_shape, *, use_bias: bool = False, param_dtype=jnp.float32,
                 init_std: float = _INIT_STD, rngs: nnx.Rngs):
        self.in_shape, self.out_shape = _shape(in_shape), _shape(out_shape)
        key = rngs.params()
        self.kernel = nnx.Param(init_std * jax.random.normal(key, self.in_shape + self.out_shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros(self.out_shape, param_dtype)) if use_bias else None

    def flat_kernel(self) -> jax.Array:
        """The kernel as a matrix [prod(in_shape), prod(out_shape)]."""
        return self.kernel[...].reshape(math.prod(self.in_shape), math.prod(self.out_shape))

    def flat_bias(self) -> jax.Array | None:
        return None if self.bias is None else self.bias[...].reshape(-1)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x of shape [..., *in_shape] -> [..., *out_shape]."""
        lead = x.shape[: x.ndim - len(self.in_shape)]
        x, kernel = x.reshape(*lead, -1), self.flat_kernel().astype(x.dtype)
        y = matmul(x, kernel) if self.bias is None else affine(x, kernel, self.flat_bias().astype(x.dtype))
        return y.reshape(*lead, *self.out_shape)


def fused_projection(x: jax.Array, projections: Sequence[Linear], *, interleave: bool = False) -> jax.Array:
    """Applies several projections of the same input as one dot (fewer, larger dots are faster on CPU).

    Storage stays one parameter per projection, so checkpoints keep the original's separate keys.
    x [..., I] -> [..., O1 + O2 + ...], each projection's flattened output side by side; with `interleave`
    (P projections of equal output size O) -> [..., O, P], output j of every projection adjacent, for an
    elementwise consumer that combines them (its gradient is then written in one pass, no concatenation).
    """
    kernels = [p.flat_kernel() for p in projections]
    biases = None
    if any(p.bias is not None for p in projections):
        biases = [p.flat_bias() if p.bias is not None else jnp.zeros(k.shape[1], k.dtype)
                  for p, k in zip(projections, kernels)]
    if interleave:
        join = lambda parts: jnp.stack(parts, axis=-1).reshape(*parts[0].shape[:-1], -1)  # noqa: E731
    else:
        join = lambda parts: jnp.concatenate(parts, axis=-1)  # noqa: E731
    kernel = join(kernels).astype(x.dtype)
    y = matmul(x, kernel) if biases is None else affine(x, kernel, join(biases).astype(x.dtype))
    return y.reshape(*y.shape[:-1], -1, len(projections)) if interleave else y


def fused_linear(x: jax.Array, projections: Sequence[Linear]) -> list[jax.Array]:
    """`fused_projection` split back: x [..., I] -> one array [..., *out_shape] per projection."""
    y = fused_projection(x, projections)
    splits = np.cumsum([math.prod(p.out_shape) for p in projections])[:-1].tolist()
    parts = jnp.split(y, splits, axis=-1)
    return [part.reshape(*x.shape[:-1], *p.out_shape) for part, p in zip(parts, projections)]


class Embed(nnx.Module):
    """Token embedding [V, D]; `decode` reuses it as the tied output head."""

    def __init__(self, vocab_size: int, dim: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.weight = nnx.Param(_INIT_STD * jax.random.normal(rngs.params(), (vocab_size, dim), param_dtype))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids [B, T] int -> [B, T, D]."""
        return jnp.take(self.weight[...], ids, axis=0)

    def decode(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] -> logits [B, T, V], tied to the embedding by construction."""
        return matmul_t(x, self.weight[...].astype(x.dtype))
