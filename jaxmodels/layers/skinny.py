"""Products of few rows (decode steps) on the CPU kernels of `jaxmodels_kernels.matvec`, with XLA dots for
their gradients.

A decode step multiplies [B, 1, D] activations by every weight once: XLA:CPU runs those products well below
the memory bandwidth in float32 and at 1-2 GB/s with bfloat16 weights, so the tuned path sends inputs of at
most MAX_ROWS rows here (docs/layers.md, "Decode kernels"). The weights are read in their stored dtype
(float32, bfloat16, or int8 with a scale per output channel) and the output is cast to the input's dtype.
The backward passes are the plain formulas, so a training step that happens to have few rows stays correct.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmodels_kernels import matvec

MAX_ROWS = 16


def applies(x: jax.Array, in_ndim: int) -> bool:
    """Whether the kernels take x [..., *in_shape] (in_shape of `in_ndim` dims): few rows and built here."""
    rows = math.prod(x.shape[: x.ndim - in_ndim])
    return rows <= MAX_ROWS and matvec.available()


@jax.custom_vjp
def projections(x: jax.Array, kernels: tuple[jax.Array, ...], biases: tuple[jax.Array | None, ...]
                ) -> tuple[jax.Array, ...]:
    """`x @ w_i + b_i` for x [..., I], kernels w_i [I, O_i] in their stored dtype, biases b_i [O_i] or None."""
    x2 = x.reshape(-1, x.shape[-1])  # [R, I]
    outs = []
    for w, b in zip(kernels, biases):
        y = matvec.matvec_kn(x2, w).astype(x.dtype).reshape(*x.shape[:-1], w.shape[1])
        outs.append(y if b is None else y + b.astype(x.dtype))
    return tuple(outs)


def _projections_fwd(x, kernels, biases):
    return projections(x, kernels, biases), (x, kernels, biases)


def _projections_bwd(res, dys):
    x, kernels, biases = res
    x2 = x.reshape(-1, x.shape[-1])  # [R, I]
    dx2, dws, dbs = None, [], []
    for dy, w, b in zip(dys, kernels, biases):
        dy2 = dy.reshape(-1, dy.shape[-1])  # [R, O]
        term = dy2 @ w.astype(dy2.dtype).T
        dx2 = term if dx2 is None else dx2 + term
        dws.append((x2.T @ dy2).astype(w.dtype))
        dbs.append(None if b is None else jnp.sum(dy2, axis=0).astype(b.dtype))
    return dx2.reshape(x.shape).astype(x.dtype), tuple(dws), tuple(dbs)


projections.defvjp(_projections_fwd, _projections_bwd)


@jax.custom_vjp
def matmul_t(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w.T` for x [..., I] and w [O, I] in its stored dtype (a tied output head) -> [..., O] in x's dtype."""
    y = matvec.matvec_nk(x.reshape(-1, x.shape[-1]), w)
    return y.astype(x.dtype).reshape(*x.shape[:-1], w.shape[0])


def _matmul_t_fwd(x, w):
    return matmul_t(x, w), (x, w)


def _matmul_t_bwd(res, dy):
    x, w = res
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])  # [R, O], [R, I]
    dx = (dy2 @ w.astype(dy2.dtype)).reshape(x.shape)
    return dx.astype(x.dtype), (dy2.T @ x2).astype(w.dtype)


matmul_t.defvjp(_matmul_t_fwd, _matmul_t_bwd)
