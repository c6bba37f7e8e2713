"""One decomposed matrix and the SVF composition W' = U diag(S * m) V^T * (sum S / sum(S * m)).

Matrices are in our layout, the flattened Linear kernel [I, O] (I = prod(in_shape), O = prod(out_shape)).
Hugging Face stores the transpose [O, I]; its SVD has the same singular values with U and V swapped, so a
mask (one value per singular value) means the same thing in both frameworks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SvdComponent:
    """W = U diag(S) V^T with U [I, R], S [R] (descending), V [O, R]; R = min(I, O)."""

    u: jax.Array
    s: jax.Array
    v: jax.Array

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])

    def reconstruct(self) -> jax.Array:
        """The original matrix [I, O]."""
        return (self.u * self.s) @ self.v.T

    def compose(self, mask: jax.Array) -> jax.Array:
        """W'(m) [I, O] for a mask m [R]; the rescale keeps sum(S) (the nuclear norm) of W.

        An all-zero mask (e.g. all mixing coefficients 0 in few-shot CEM) has nothing to rescale: it gives W.
        """
        scaled = self.s * mask.astype(self.s.dtype)  # [R]
        total = jnp.sum(scaled)
        safe = jnp.where(total > 0, total, 1.0)
        composed = (self.u * scaled) @ self.v.T * (jnp.sum(self.s) / safe)
        return jnp.where(total > 0, composed, self.reconstruct())


def mask_from_z(z: jax.Array) -> jax.Array:
    """m = sigmoid(z), the official policy's mask (max_mult 1)."""
    return jax.nn.sigmoid(z)
