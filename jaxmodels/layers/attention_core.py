"""Softmax attention with a hand-written backward pass that stays on XLA:CPU's fast batched-dot path.

Operands are heads-major, each key/value head's G query heads stacked along the rows:
q [B, K, Q, H] with Q = G*T (row g*T + t is query t of head g), k and v [B, K, S, H], mask [B, T, S].
Every dot then contracts over the last dimension of its left operand. Autodiff of the same forward gives
dV = P^T dO and dK = dS^T Q, which contract over the first dimension of P and dS; XLA:CPU runs those
on its slow path (or transposes the [Q, S] tensors). The backward below computes dV^T = dO^T P and
dK^T = Q^T dS instead, transposing only [Q, H]- and [H, S]-sized operands and products (S/H times
smaller than the scores), materialised behind optimisation barriers so that XLA cannot fold the
transposes back into the dots.

The softmax is normalised after the PV product (dividing [.., T, H] rather than [.., T, S]) and its
backward uses delta = rowsum(dO * O), a [.., T, H] reduction, instead of rowsum(P * dP).
`reference_attention` is the plain formulation, for tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASKED = jnp.finfo(jnp.float32).min


def _masked_scores(q, k, mask, t):
    """[B, K, G, T, S] float32 scaled scores; masked entries set to the float32 minimum."""
    b, kv_heads, rows, h = q.shape
    scores = jnp.einsum("BKQH,BKSH->BKQS", q, k, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, kv_heads, rows // t, t, k.shape[2]) * (h ** -0.5)
    return jnp.where(mask[:, None, None], scores, _MASKED)


def _forward(q, k, v, mask, keep_scale):
    b, kv_heads, rows, h = q.shape
    t = mask.shape[1]
    scores = _masked_scores(q, k, mask, t)
    unnorm = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))  # [B, K, G, T, S]
    row_sum = jnp.sum(unnorm, axis=-1, keepdims=True)  # [B, K, G, T, 1]
    probs = unnorm if keep_scale is None else unnorm * keep_scale  # dropout commutes with normalising
    out = jnp.einsum("BKQS,BKSH->BKQH", probs.astype(v.dtype).reshape(b, kv_heads, rows, -1), v,
                     preferred_element_type=jnp.float32)
    out = (out.reshape(b, kv_heads, rows // t, t, h) / row_sum).astype(v.dtype).reshape(q.shape)
    return out, (unnorm, row_sum)


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
    b, kv_heads, rows, h = q.shape
    t = mask.shape[1]
    grouped = (b, kv_heads, rows // t, t, h)
    inv_sum = 1.0 / row_sum
    d_out = d_out.reshape(grouped).astype(jnp.float32)
    d_scaled = (d_out * inv_sum).astype(v.dtype).reshape(q.shape)  # dO / l
    delta = jnp.sum(d_out * out.reshape(grouped).astype(jnp.float32), axis=-1, keepdims=True) * inv_sum
    probs = unnorm if keep_scale is None else unnorm * keep_scale
    probs = probs.astype(v.dtype).reshape(b, kv_heads, rows, -1)  # [B, K, Q, S]
    d_v = _rows_contracted(d_scaled, probs)  # P^T dO
    d_probs = jnp.einsum("BKQH,BKSH->BKQS", d_scaled, v, preferred_element_type=jnp.float32)
    d_probs = d_probs.reshape(unnorm.shape)
    if keep_scale is not None:
        d_probs = d_probs * keep_scale
    d_scores = jnp.where(mask[:, None, None], unnorm * (d_probs - delta), 0.0) * (h ** -0.5)
    d_scores = d_scores.reshape(b, kv_heads, rows, -1)  # [B, K, Q, S]
    d_q = jnp.einsum("BKQS,BKSH->BKQH", d_scores.astype(k.dtype), k, preferred_element_type=jnp.float32)
    d_k = _rows_contracted(q, d_scores.astype(q.dtype))  # dS^T Q
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None, None


attention_core.defvjp(_attention_fwd, _attention_bwd)


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                        keep_scale: jax.Array | None = None) -> jax.Array:
    """The plain formulation of `attention_core` (softmax, then dropout, then PV), differentiated by JAX."""
    b, kv_heads, rows, h = q.shape
    t = mask.shape[1]
    probs = jax.nn.softmax(_masked_scores(q, k, mask, t), axis=-1)
    if keep_scale is not None:
        probs = probs * keep_scale
    out = jnp.einsum("BKQS,BKSH->BKQH", probs.astype(v.dtype).reshape(b, kv_heads, rows, -1), v)
    return out.astype(v.dtype)
