"""Products of few rows (decode steps) on the CPU kernels of `jaxmodels_kernels.matvec`, with XLA dots for
their gradients.

A decode step multiplies [B, 1, D] activations by every weight once: XLA:CPU runs those products well below
the memory bandwidth in float32 and at 1-2 GB/s with bfloat16 weights, so the tuned path sends inputs of at
most MAX_ROWS rows here (docs/layers.md, "Decode kernels"). The weights are read in their stored dtype
(float32, bfloat16, or int8 with its scales: per output channel, or Q8_0 blocks; jaxmodels.layers.int8) and
the output is cast to the input's dtype. The backward passes are the plain formulas, so a training step that
happens to have few rows stays correct; int8 values get no gradient (their scales do).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmodels.layers import int8
from jaxmodels_kernels import matvec

MAX_ROWS = 16


def applies(x: jax.Array) -> bool:
    """Whether the kernels take x [..., K]: at most MAX_ROWS rows, the kernels built here, and no mesh of
    several devices in force (`jax.set_mesh`): XLA cannot partition the kernels' custom call, so under a
    mesh it would gather every sharded weight to each device at every step; XLA's dots partition."""
    mesh = jax.sharding.get_abstract_mesh()
    return math.prod(x.shape[:-1]) <= MAX_ROWS and (mesh.empty or mesh.size == 1) and matvec.available()


def _float_kernel(w: jax.Array, scale: jax.Array | None) -> jax.Array:
    """w [I, O] as the floats it stands for (an int8 kernel dequantised with its scale [O] or [I/32, O])."""
    return w if scale is None else int8.dequantize_kn(w, scale)


def _weight_grads(w: jax.Array, scale: jax.Array | None, dw: jax.Array):
    """(dw for w, d scale) from dw [I, O], the gradient of the floats w stands for; an int8 w gets none."""
    if scale is None:
        return dw.astype(w.dtype), None
    _, pull = jax.vjp(lambda s: int8.dequantize_kn(w, s), scale)
    return None, pull(dw.astype(jnp.float32))[0]


@jax.custom_vjp
def projections(x: jax.Array, kernels: tuple[jax.Array, ...], scales: tuple[jax.Array | None, ...],
                biases: tuple[jax.Array | None, ...]) -> tuple[jax.Array, ...]:
    """`x @ w_i + b_i` for x [..., I], kernels w_i [I, O_i] in their stored dtype (int8 with scales_i [O_i] or
    [I/32, O_i], else scales_i None), biases b_i [O_i] or None."""
    x2 = x.reshape(-1, x.shape[-1])  # [R, I]
    outs = []
    for w, scale, b in zip(kernels, scales, biases):
        y = matvec.matvec_kn(x2, w, scale).astype(x.dtype).reshape(*x.shape[:-1], w.shape[1])
        outs.append(y if b is None else y + b.astype(x.dtype))
    return tuple(outs)


def _projections_fwd(x, kernels, scales, biases):
    return projections(x, kernels, scales, biases), (x, kernels, scales, biases)


def _projections_bwd(res, dys):
    x, kernels, scales, biases = res
    x2 = x.reshape(-1, x.shape[-1])  # [R, I]
    dx2, dws, dss, dbs = None, [], [], []
    for dy, w, scale, b in zip(dys, kernels, scales, biases):
        dy2 = dy.reshape(-1, dy.shape[-1])  # [R, O]
        term = dy2 @ _float_kernel(w, scale).astype(dy2.dtype).T
        dx2 = term if dx2 is None else dx2 + term
        dw, ds = _weight_grads(w, scale, x2.T @ dy2)
        dws.append(dw)
        dss.append(ds)
        dbs.append(None if b is None else jnp.sum(dy2, axis=0).astype(b.dtype))
    return dx2.reshape(x.shape).astype(x.dtype), tuple(dws), tuple(dss), tuple(dbs)


projections.defvjp(_projections_fwd, _projections_bwd)


@jax.custom_vjp
def matmul_t(x: jax.Array, w: jax.Array, scale: jax.Array | None) -> jax.Array:
    """`x @ w.T` for x [..., I] and w [O, I] in its stored dtype (a tied output head; int8 with scale [O] or
    [O, I/32]) -> [..., O] in x's dtype."""
    y = matvec.matvec_nk(x.reshape(-1, x.shape[-1]), w, scale)
    return y.astype(x.dtype).reshape(*x.shape[:-1], w.shape[0])


def _matmul_t_fwd(x, w, scale):
    return matmul_t(x, w, scale), (x, w, scale)


def _matmul_t_bwd(res, dy):
    x, w, scale = res
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])  # [R, O], [R, I]
    w_float = w if scale is None else int8.dequantize_rows(w, scale)  # [O, I]
    dx = (dy2 @ w_float.astype(dy2.dtype)).reshape(x.shape)
    dw = dy2.T @ x2  # [O, I]
    if scale is None:
        return dx.astype(x.dtype), dw.astype(w.dtype), None
    _, pull = jax.vjp(lambda s: int8.dequantize_rows(w, s), scale)
    return dx.astype(x.dtype), None, pull(dw.astype(jnp.float32))[0]


matmul_t.defvjp(_matmul_t_fwd, _matmul_t_bwd)
