"""FieldState: the M hypertensors of a field as arrays, plus usage statistics, the error queue and the rng.

Shapes (letters as in DESIGN.md, plus O output width, Q error-queue capacity):
normals [M, D] (unit rows), deltas [M], dneg [M] (< 0), dpos [M] (> 0), taus [M] (> 0),
controls [M, 3, O] (the original's [M, O, 3] transposed so each control's O values are contiguous),
interp [M] int32 (ids into INTERPOLATIONS), ref_radius [M], usage / avg_dist / loss_trace [M],
queue_x [Q, D], queue_loss [Q], queue_stamp [Q] int32 (push order; -1 = empty slot),
pushes and relocations: int32 counters; key: uint32 [2] base PRNG key (relocation r draws from fold_in(key, r)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FieldState:
    normals: jax.Array
    deltas: jax.Array
    dneg: jax.Array
    dpos: jax.Array
    taus: jax.Array
    controls: jax.Array
    interp: jax.Array
    ref_radius: jax.Array
    usage: jax.Array
    avg_dist: jax.Array
    loss_trace: jax.Array
    queue_x: jax.Array
    queue_loss: jax.Array
    queue_stamp: jax.Array
    pushes: jax.Array
    relocations: jax.Array
    key: jax.Array

    @property
    def size(self) -> int:
        return int(self.normals.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.normals.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.controls.shape[2])

    def replace(self, **changes) -> "FieldState":
        return dataclasses.replace(self, **changes)


def make_state(normals, deltas, dneg, dpos, taus, controls, interp, ref_radius, *, queue_size: int,
               seed: int, dtype=jnp.float32) -> FieldState:
    """Validates per-tensor arrays (controls as [M, O, 3]) and builds a fresh FieldState (empty queue)."""
    normals = np.asarray(normals, np.float64)
    if normals.ndim != 2 or normals.shape[0] == 0 or normals.shape[1] == 0:
        raise ValueError(f"FieldState: normals must have shape [M, D] with M, D >= 1, got {normals.shape} "
                         "(an empty field cannot predict)")
    m, d = normals.shape
    controls = np.asarray(controls)
    if controls.ndim != 3 or controls.shape[0] != m or controls.shape[2] != 3 or controls.shape[1] == 0:
        raise ValueError(f"FieldState: controls must have shape [M, O, 3] = [{m}, O, 3], got {controls.shape}")
    per = {"deltas": deltas, "dneg": dneg, "dpos": dpos, "taus": taus, "interp": interp, "ref_radius": ref_radius}
    per = {k: np.asarray(v) for k, v in per.items()}
    for k, v in per.items():
        if v.shape != (m,):
            raise ValueError(f"FieldState: {k} must have shape [M] = ({m},), got {v.shape}")
    norms = np.linalg.norm(normals, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(normals)):
        bad = np.nonzero((norms == 0) | ~np.isfinite(norms))[0]
        raise ValueError(f"FieldState: normals of tensors {bad[:8].tolist()} are zero or not finite")
    bad = np.nonzero(~((per["dneg"] < 0) & (per["dpos"] > 0)))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"FieldState: inverted band at tensors {bad[:8].tolist()} (e.g. tensor {i}: dneg="
                         f"{per['dneg'][i]}, dpos={per['dpos'][i]}); expected dneg < 0 < dpos")
    if np.any(per["taus"] <= 0):
        raise ValueError(f"FieldState: taus must be > 0 (tensors {np.nonzero(per['taus'] <= 0)[0][:8].tolist()})")
    f = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return FieldState(
        normals=f(normals / norms[:, None]), deltas=f(per["deltas"]), dneg=f(per["dneg"]), dpos=f(per["dpos"]),
        taus=f(per["taus"]), controls=f(np.transpose(controls, (0, 2, 1))),
        interp=jnp.asarray(per["interp"], jnp.int32), ref_radius=f(per["ref_radius"]),
        usage=jnp.zeros(m, dtype), avg_dist=jnp.zeros(m, dtype), loss_trace=jnp.zeros(m, dtype),
        queue_x=jnp.zeros((queue_size, d), dtype), queue_loss=jnp.zeros(queue_size, jnp.float32),
        queue_stamp=jnp.full(queue_size, -1, jnp.int32), pushes=jnp.int32(0), relocations=jnp.int32(0),
        key=jax.random.PRNGKey(seed))
