"""The original's six computing components as batched Flax NNX modules (originals.md §1.2).

Every parameter keeps the original's name and orientation (`y = x @ W + b`, W of shape [in, out]), so the
NumPy core's weights load as they are. Letters: B batch, I input_dim, T task_dim, F frame_dim,
H hidden_dim, K = 5 frames (also Q for the attending frame).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.layers.dense import matmul
from jaxmodels.vvalt.config import FRAME_NAMES

_EPS = 1e-8  # the original's epsilon in the relational norm and the adjacency row sums


def _param(weights: dict[str, np.ndarray], key: str, dtype) -> nnx.Param:
    return nnx.Param(jnp.asarray(weights[key], dtype=dtype))


def dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., in] @ w [in, out] -> [..., out] as one 2-D product.

    XLA:CPU sends a 2-D dot to its fast library but runs a 3-D [B, K, F] x [F, G] one on a slower path (about
    2x here), and `matmul`'s custom gradient keeps the weight gradient on the fast path too (see dense.py).
    """
    return matmul(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[-1])


def row_normalize(adj: jax.Array) -> jax.Array:
    """A / (rowsum(A) + 1e-8): the graph frame's propagation matrix; adj [..., F, F]."""
    return adj / (jnp.sum(adj, axis=-1, keepdims=True) + _EPS)


def symmetric_normalize(adj: jax.Array) -> jax.Array:
    """D^-1/2 (A + I) D^-1/2 with D the row sums of A + I; a node of degree <= 0 gets weight 0. adj [..., F, F]."""
    a = adj + jnp.eye(adj.shape[-1], dtype=adj.dtype)
    deg = jnp.sum(a, axis=-1)  # [..., F]
    inv_sqrt = jnp.where(deg > 0, jax.lax.rsqrt(jnp.where(deg > 0, deg, 1.0)), 0.0)
    return inv_sqrt[..., :, None] * a * inv_sqrt[..., None, :]


def propagate(z: jax.Array, adj: jax.Array) -> jax.Array:
    """Applies a propagation matrix to every vector: z [B, ..., F], adj [F, F] or [B, F, F] -> z @ adj^T."""
    if adj.ndim == 2:
        return dot(z, adj.T)
    return jnp.einsum("B...F,BGF->B...G", z, adj)


class FrameEncoder(nnx.Module):
    """Five fixed projections of the input, one per perspective (W_* [I, F], b_* [F])."""

    def __init__(self, weights: dict[str, np.ndarray], dtype):
        for name in FRAME_NAMES:
            setattr(self, f"W_{name}", _param(weights, f"encoder.W_{name}", dtype))
            setattr(self, f"b_{name}", _param(weights, f"encoder.b_{name}", dtype))

    def _z(self, name: str, x: jax.Array) -> jax.Array:
        w, b = getattr(self, f"W_{name}"), getattr(self, f"b_{name}")
        return dot(x, w[...]) + b[...]

    def __call__(self, x: jax.Array, adj: jax.Array | None = None) -> jax.Array:
        """x [B, I], adj None, [F, F] or [B, F, F] -> frames [B, K, F] in FRAME_NAMES order."""
        semantic = jnp.tanh(self._z("semantic", x))

        z = self._z("structural", x)
        f = z.shape[-1]
        half = f // 2
        parts = [jnp.sin(z[:, :half]), jnp.cos(z[:, half:2 * half])]
        if f % 2:
            parts.append(z[:, -1:])  # the original passes this last element through unbounded
        structural = jnp.concatenate(parts, axis=-1)

        z = self._z("causal", x)
        causal = jnp.tanh(jnp.concatenate([z[:, :1], jnp.diff(z, axis=-1)], axis=-1))

        z = self._z("relational", x)
        relational = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + _EPS)

        z = self._z("graph", x)
        if adj is not None:
            z = propagate(z, row_normalize(adj))
        graph = jnp.tanh(z)
        return jnp.stack([semantic, structural, causal, relational, graph], axis=1)


class VantageSelector(nnx.Module):
    """Task-conditioned frame weights softmax(t W_task + b_task) (W_task [T, K], b_task [K])."""

    def __init__(self, weights: dict[str, np.ndarray], dtype):
        self.W_task = _param(weights, "selector.W_task", dtype)
        self.b_task = _param(weights, "selector.b_task", dtype)

    def __call__(self, t: jax.Array) -> jax.Array:
        """t [B, T] -> weights [B, K], non-negative, summing to 1 (max-subtracted softmax)."""
        return jax.nn.softmax(dot(t, self.W_task[...]) + self.b_task[...], axis=-1)


class TopologyProjector(nnx.Module):
    """f @ W_topology for every frame (W_topology [F, F]), after propagation over the graph when one is given."""

    def __init__(self, weights: dict[str, np.ndarray], dtype):
        self.W_topology = _param(weights, "projector.W_topology", dtype)

    def __call__(self, frames: jax.Array, adj: jax.Array | None = None) -> jax.Array:
        """frames [B, K, F], adj None (no propagation), [F, F] or [B, F, F] -> [B, K, F].

        With an adjacency, each frame is a signal on the F coordinates seen as graph nodes and is smoothed by
        D^-1/2 (A + I) D^-1/2 before the projection: a one-layer graph convolution.
        """
        if adj is not None:
            frames = propagate(frames, symmetric_normalize(adj))
        return dot(frames, self.W_topology[...])


class FrameAttention(nnx.Module):
    """Self-attention over the K frames as a K-token sequence, mean-pooled, then the output projection."""

    def __init__(self, weights: dict[str, np.ndarray], dtype):
        for name in ("W_query", "W_key", "W_value", "W_output", "b_output"):
            setattr(self, name, _param(weights, f"attention.{name}", dtype))

    def __call__(self, s: jax.Array) -> tuple[jax.Array, jax.Array]:
        """s [B, K, F] -> (output [B, F], attention [B, Q, K] with rows summing to 1)."""
        f = s.shape[-1]
        q = dot(s, self.W_query[...])  # [B, K, F]
        k = dot(s, self.W_key[...])  # [B, K, F]
        scores = jnp.einsum("BQF,BKF->BQK", q, k) / np.sqrt(f).astype(s.dtype)
        attn = jax.nn.softmax(scores, axis=-1)  # [B, Q, K]
        # mean_q(attn @ (s Wv)) == (mean_q(attn) @ s) @ Wv: pooling first makes the value projection a
        # [B, F] x [F, F] product instead of [B*K, F] x [F, F]; the result is the same up to rounding.
        pooled = jnp.einsum("BK,BKF->BF", jnp.mean(attn, axis=1), s)
        return dot(dot(pooled, self.W_value[...]), self.W_output[...]) + self.b_output[...], attn


class LogicRefiner(nnx.Module):
    """y = clip(0.5 tanh(o) + 0.5 tanh(tanh(o W1 + b1) W2 + b2), -1, 1) (W1 [F, H], W2 [H, F])."""

    ALPHA = 0.5  # the original's fixed blend between the input and the refinement

    def __init__(self, weights: dict[str, np.ndarray], dtype):
        for name in ("W1", "b1", "W2", "b2"):
            setattr(self, name, _param(weights, f"refiner.{name}", dtype))

    def __call__(self, o: jax.Array) -> jax.Array:
        """o [B, F] -> [B, F] in [-1, 1]."""
        h = jnp.tanh(dot(o, self.W1[...]) + self.b1[...])  # [B, H]
        r = jnp.tanh(dot(h, self.W2[...]) + self.b2[...])  # [B, F]
        return jnp.clip(self.ALPHA * jnp.tanh(o) + (1 - self.ALPHA) * r, -1.0, 1.0)


def verify(y: jax.Array, safe_bounds: tuple[float, float]) -> tuple[jax.Array, jax.Array]:
    """The consistency verifier: NaN -> 0, +inf -> high, -inf -> low, then clip to safe_bounds.

    y [B, F] -> (safe output [B, F], number of non-finite entries replaced per sample [B]).
    """
    low, high = safe_bounds
    nonfinite = jnp.sum(~jnp.isfinite(y), axis=-1)
    y = jnp.nan_to_num(y, nan=0.0, posinf=high, neginf=low)
    return jnp.clip(y, low, high), nonfinite
