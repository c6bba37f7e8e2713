"""Matmuls (`matmul`, `matmul_t`, `affine`, `projections`) whose weight gradient takes XLA:CPU's fast dot path.

XLA:CPU hands a dot to its fast library only when the left operand has its contracting dimension last.
The weight gradient of `y = x @ w` is `x^T dy`, contracting over tokens, which is the first dimension of
both operands: left alone, XLA runs it on the slower path and adds transpose copies around it. Here the
backward pass materialises the transpose of the smaller of `x` and `dy` behind an optimisation barrier
(so XLA cannot fold it back into the dot), and the dot then runs in its canonical form. Measured effect on
the Hyformer training step: docs/hyformer-speed.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _canonical_weight_grad(x2: jax.Array, dy2: jax.Array) -> jax.Array:
    """`x2^T @ dy2` for x2 [R, I], dy2 [R, O] -> [I, O], with the transposed operand materialised.

    When x2 is the wider operand, `dy2^T @ x2` [O, I] is computed and transposed afterwards; the barrier on
    that product stops XLA from folding the final transpose back into the dot (which would swap the
    operands and put the contracting dimension first again).
    """
    if x2.shape[1] <= dy2.shape[1]:
        xt = jax.lax.optimization_barrier(x2.T)  # [I, R]
        return xt @ dy2
    dyt = jax.lax.optimization_barrier(dy2.T)  # [O, R]
    return jax.lax.optimization_barrier(dyt @ x2).T  # [O, I] -> [I, O]


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w` for x [..., I] and w [I, O] -> [..., O]."""
    return jnp.einsum("...i,io->...o", x, w)


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _dense_bwd(x: jax.Array, w: jax.Array, dy: jax.Array, *, transposed: bool) -> tuple[jax.Array, jax.Array]:
    """(dx, dw) of `x @ w` (w [I, O]) or, `transposed`, of `x @ w.T` (w [O, I]): the weight gradient
    `x^T dy` [I, O] or `dy^T x` [O, I] through `_canonical_weight_grad`."""
    dx = jnp.einsum("...o,oi->...i" if transposed else "...o,io->...i", dy, w)
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dw = _canonical_weight_grad(dy2, x2) if transposed else _canonical_weight_grad(x2, dy2)
    return dx.astype(x.dtype), dw.astype(w.dtype)


def _matmul_bwd(res, dy):
    return _dense_bwd(*res, dy, transposed=False)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """`x @ w + b` for x [..., I], w [I, O] and b [O] -> [..., O].

    The bias gradient is reduced from the same [R, O] array the two dots read. With the bias added outside
    the custom VJP, XLA recomputed dy's producer (the whole SwiGLU backward, for one) just for that reduction.
    """
    return jnp.einsum("...i,io->...o", x, w) + b


def _affine_fwd(x, w, b):
    return affine(x, w, b), (x, w, b)


def _affine_bwd(res, dy):
    x, w, b = res
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx, dw = _dense_bwd(x, w, dy2, transposed=False)
    return dx.reshape(x.shape), dw, jnp.sum(dy2, axis=0).astype(b.dtype)


affine.defvjp(_affine_fwd, _affine_bwd)


@jax.custom_vjp
def matmul_t(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w.T` for x [..., I] and w [O, I] -> [..., O] (a tied output head: w is the embedding)."""
    return jnp.einsum("...i,oi->...o", x, w)


def _matmul_t_fwd(x, w):
    return matmul_t(x, w), (x, w)


def _matmul_t_bwd(res, dy):
    return _dense_bwd(*res, dy, transposed=True)


matmul_t.defvjp(_matmul_t_fwd, _matmul_t_bwd)


@jax.custom_vjp
def projections(x: jax.Array, kernels: tuple[jax.Array, ...], biases: tuple[jax.Array | None, ...]
                ) -> tuple[jax.Array, ...]:
    """`x @ w_i + b_i` for each kernel w_i [I, O_i] (bias b_i [O_i] or None): x [..., I] -> ([..., O_i], ...).

    Several projections of one input (q/k/v, gate/up) as one dot each, with no concatenated kernel: joining
    the kernels costs a copy of them per call and splitting the output's gradient another. The backward
    pass sums dx over the projections and, where the input is the narrower operand, transposes x once for
    all of the weight gradients.
    """
    return tuple(_affine_or_matmul(x, w, b) for w, b in zip(kernels, biases))


def _affine_or_matmul(x, w, b):
    y = jnp.einsum("...i,io->...o", x, w)
    return y if b is None else y + b


def _projections_fwd(x, kernels, biases):
    return projections(x, kernels, biases), (x, kernels, biases)


def _projections_bwd(res, dys):
    x, kernels, biases = res
    x2 = x.reshape(-1, x.shape[-1])  # [R, I]
    dy2s = [dy.reshape(-1, dy.shape[-1]) for dy in dys]  # [R, O_i]
    dx = sum(jnp.einsum("ro,io->ri", dy2, w) for dy2, w in zip(dy2s, kernels))
    xt = None
    dws = []
    for dy2, w in zip(dy2s, kernels):
        if x2.shape[1] <= dy2.shape[1]:  # the input is the narrower operand: one shared transpose of x
            if xt is None:
                xt = jax.lax.optimization_barrier(x2.T)  # [I, R]
            dw = xt @ dy2
        else:
            dw = _canonical_weight_grad(x2, dy2)
        dws.append(dw.astype(w.dtype))
    dbs = tuple(None if b is None else jnp.sum(dy2, axis=0).astype(b.dtype) for dy2, b in zip(dy2s, biases))
    return dx.reshape(x.shape).astype(x.dtype), tuple(dws), dbs


projections.defvjp(_projections_fwd, _projections_bwd)
