"""Matmuls with custom VJPs (`projections`, with `matmul` and `affine` as its one-projection case, and
`matmul_t`): the tuned path's projections, whose weight gradients keep XLA:CPU's fast dot form.

Each weight gradient `x^T dy` is computed after materialising the transpose of the smaller of `x` and `dy`
behind an optimisation barrier, so that the dot contracts over its left operand's last dimension. Every dot
accumulates in float32 (float64 operands: in float64) and rounds once to its operands' dtype (`_dot`): for float32 that is the plain dot, for
bfloat16 it is the form XLA:CPU hands to YNNPACK with its operands as they are (a bfloat16 dot with a bfloat16
result is widened to a float32 one first, at half the speed). Why and what it measured: docs/layers.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _accumulator(*operands) -> jnp.dtype:
    """The dtype a dot of these operands accumulates in: float32, or theirs when wider (float64)."""
    return jnp.promote_types(jnp.result_type(*operands), jnp.float32)


def _dot(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """`jnp.einsum(equation, a, b)` accumulated in `_accumulator(a, b)`, in the dtype einsum would return."""
    return jnp.einsum(equation, a, b, preferred_element_type=_accumulator(a, b)).astype(jnp.result_type(a, b))


def _weight_grads(x2: jax.Array, dy2s: list[jax.Array]) -> list[jax.Array]:
    """`x2^T @ dy2` for x2 [R, I] and each dy2 [R, O] -> [I, O], with the transposed operand materialised.

    Where x2 is the narrower operand its transpose is materialised, once for all of `dy2s`. Where it is the
    wider one, `dy2^T @ x2` [O, I] is computed and transposed afterwards; the barrier on that product stops XLA
    from folding the final transpose back into the dot (which would swap the operands and put the contracting
    dimension first again).
    """
    xt = None
    grads = []
    for dy2 in dy2s:
        if x2.shape[1] <= dy2.shape[1]:
            if xt is None:
                xt = jax.lax.optimization_barrier(x2.T)  # [I, R]
            grads.append(_dot("ir,ro->io", xt, dy2))
        else:
            dyt = jax.lax.optimization_barrier(dy2.T)  # [O, R]
            grads.append(jax.lax.optimization_barrier(_dot("or,ri->oi", dyt, x2)).T)  # [O, I] -> [I, O]
    return grads


@jax.custom_vjp
def projections(x: jax.Array, kernels: tuple[jax.Array, ...], biases: tuple[jax.Array | None, ...]
                ) -> tuple[jax.Array, ...]:
    """`x @ w_i + b_i` for each kernel w_i [I, O_i] (bias b_i [O_i] or None): x [..., I] -> ([..., O_i], ...).

    Several projections of one input (q/k/v, gate/up) as one dot each, with no concatenated kernel: joining
    the kernels costs a copy of them per call and splitting the output's gradient another. The backward
    pass sums dx over the projections and shares x's transpose between the weight gradients. A bias gradient
    is reduced from the same [R, O] array the dots read (with the bias added outside the custom VJP, XLA
    recomputed dy's producer, the whole SwiGLU backward for one, just for that reduction).
    """
    outs = []
    for w, b in zip(kernels, biases):
        y = jnp.einsum("...i,io->...o", x, w, preferred_element_type=_accumulator(x, w))
        dtype = jnp.result_type(x, w) if b is None else jnp.result_type(x, w, b)
        outs.append((y if b is None else y + b).astype(dtype))  # the bias added before the one rounding
    return tuple(outs)


def _projections_fwd(x, kernels, biases):
    return projections(x, kernels, biases), (x, kernels, biases)


def _projections_bwd(res, dys):
    x, kernels, biases = res
    dy2s = [dy.reshape(-1, dy.shape[-1]) for dy in dys]  # [R, O_i]
    dx = sum(jnp.einsum("ro,io->ri", dy2, w, preferred_element_type=_accumulator(dy2, w))
             for dy2, w in zip(dy2s, kernels))
    dws = _weight_grads(x.reshape(-1, x.shape[-1]), dy2s)
    dbs = tuple(None if b is None else jnp.sum(dy2, axis=0).astype(b.dtype) for dy2, b in zip(dy2s, biases))
    return (dx.reshape(x.shape).astype(x.dtype), tuple(dw.astype(w.dtype) for dw, w in zip(dws, kernels)), dbs)


projections.defvjp(_projections_fwd, _projections_bwd)


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w` for x [..., I] and w [I, O] -> [..., O]."""
    return projections(x, (w,), (None,))[0]


def affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """`x @ w + b` for x [..., I], w [I, O] and b [O] -> [..., O]."""
    return projections(x, (w,), (b,))[0]


@jax.custom_vjp
def matmul_t(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w.T` for x [..., I] and w [O, I] -> [..., O] (a tied output head: w is the embedding)."""
    return _dot("...i,oi->...o", x, w)


def _matmul_t_fwd(x, w):
    return matmul_t(x, w), (x, w)


def _matmul_t_bwd(res, dy):
    x, w = res
    dx = _dot("...o,oi->...i", dy, w)
    (dw,) = _weight_grads(dy.reshape(-1, dy.shape[-1]), [x.reshape(-1, x.shape[-1])])  # dy^T x [O, I]
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul_t.defvjp(_matmul_t_fwd, _matmul_t_bwd)
