"""Softmax attention with a hand-written backward pass: the tuned path's attention (docs/layers.md).

Operands are heads-major, each key/value head's G query heads stacked along the rows:
q [B, K, Q, H] with Q = G*T (row g*T + t is query t of head g), k and v [B, K, S, H], mask [B, T, S].
The backward computes dV^T = dO^T P and dK^T = Q^T dS, so that every dot contracts over its left operand's
last dimension, transposing only [Q, H]- and [H, S]-sized operands behind optimisation barriers. The mask
is added (float32 minimum) rather than selected, and the softmax is normalised after the PV product, with
delta = rowsum(dO * O) in its backward. Masked scores get no gradient, as with a select.
`reference_attention` is the plain formulation, for tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASKED = jnp.finfo(jnp.float32).min


def _row_mask(mask: jax.Array, rows: int) -> jax.Array:
    """mask [B, T, S] -> [B, 1, Q, S] for the Q = G*T stacked query rows."""
    return jnp.tile(mask[:, None], (1, 1, rows // mask.shape[1], 1))


def _scores(q, k):
    """[B, K, Q, S] float32 scores (q / sqrt(H)) k^T.

    The scale is applied to q ([Q, H]) rather than to the scores ([Q, S]): inside XLA:CPU's fused attention
    kernel a scalar multiply of the scores becomes a materialised [B, K, Q, S] operand.
    """
    return jnp.einsum("BKQH,BKSH->BKQS", q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype), k,
                      preferred_element_type=jnp.float32)


def _masked_scores(q, k, mask):
    """`_scores` with the float32 minimum added where masked (the same values as setting it, in float32).

    An additive mask rather than a select: XLA:CPU then fuses this dot, the softmax and the PV dot of the
    forward pass into one kernel instead of writing the masked scores out in between.
    """
    return _scores(q, k) + jnp.where(_row_mask(mask, q.shape[2]), 0.0, _MASKED)


def _forward(q, k, v, mask, keep_scale):
    scores = _masked_scores(q, k, mask)
    unnorm = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))  # [B, K, Q, S]
    row_sum = jnp.sum(unnorm, axis=-1, keepdims=True)  # [B, K, Q, 1]
    probs = unnorm if keep_scale is None else unnorm * keep_scale.reshape(unnorm.shape)  # commutes with the sum
    out = jnp.einsum("BKQS,BKSH->BKQH", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / row_sum).astype(v.dtype), (unnorm, row_sum)


@jax.custom_vjp
def attention_core(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                   keep_scale: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(H), masked) v -> [B, K, Q, H] (shapes in the module docstring).

    keep_scale [B, K, G, T, S] (0 or 1/(1 - rate)) applies dropout to the probabilities, or None.
    A query row with nothing to attend to averages uniformly over S instead of producing NaN.
    """
    return _forward(q, k, v, mask, keep_scale)[0]


def _attention_fwd(q, k, v, mask, keep_scale):
    out, (unnorm, row_sum) = _forward(q, k, v, mask, keep_scale)
    return out, (q, k, v, mask, keep_scale, unnorm, row_sum, out)


def _rows_contracted(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [B, K, Q, H], b [B, K, Q, S] -> b^T a [B, K, S, H] in float32, as (a^T b)^T with canonical dots.

    a^T is materialised, and so is the product before its final transpose: without the barriers XLA
    folds either transpose into the dot, which then contracts over its left operand's first dimension.
    """
    a_t = jax.lax.optimization_barrier(jnp.swapaxes(a, -1, -2))  # [B, K, H, Q]
    prod = jnp.einsum("BKHQ,BKQS->BKHS", a_t, b, preferred_element_type=jnp.float32)
    return jnp.swapaxes(jax.lax.optimization_barrier(prod), -1, -2)


def _attention_bwd(res, d_out):
    q, k, v, mask, keep_scale, unnorm, row_sum, out = res
    inv_sum = 1.0 / row_sum  # [B, K, Q, 1]
    d_out = d_out.astype(jnp.float32)
    d_scaled = (d_out * inv_sum).astype(v.dtype)  # dO / l
    delta = jnp.sum(d_out * out.astype(jnp.float32), axis=-1, keepdims=True) * inv_sum
    keep_scale = None if keep_scale is None else keep_scale.reshape(unnorm.shape)
    probs = unnorm if keep_scale is None else unnorm * keep_scale
    d_v = _rows_contracted(d_scaled, probs.astype(v.dtype))  # P^T dO
    d_probs = jnp.einsum("BKQH,BKSH->BKQS", d_scaled, v, preferred_element_type=jnp.float32)
    if keep_scale is not None:
        d_probs = d_probs * keep_scale
    d_scores = jnp.where(_row_mask(mask, q.shape[2]), unnorm * (d_probs - delta), 0.0) * (q.shape[-1] ** -0.5)
    d_q = jnp.einsum("BKQS,BKSH->BKQH", d_scores.astype(k.dtype), k, preferred_element_type=jnp.float32)
    d_k = _rows_contracted(q, d_scores.astype(q.dtype))  # dS^T Q
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None, None


attention_core.defvjp(_attention_fwd, _attention_bwd)


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                        keep_scale: jax.Array | None = None) -> jax.Array:
    """The plain formulation of `attention_core` (softmax, then dropout, then PV), differentiated by JAX.

    Masked scores are set with a select, so they get no gradient (as in the custom backward pass).
    """
    probs = jax.nn.softmax(jnp.where(_row_mask(mask, q.shape[2]), _scores(q, k), _MASKED), axis=-1)
    if keep_scale is not None:
        probs = probs * keep_scale.reshape(probs.shape)
    return jnp.einsum("BKQS,BKSH->BKQH", probs.astype(v.dtype), v).astype(v.dtype)
