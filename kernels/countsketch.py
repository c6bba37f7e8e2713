"""CountSketch: Y = X S with S[j, h_j] = s_j, i.e. Y[:, h[j]] += s[j] * X[:, j].

`make_count_sketch` draws, in order, h = rng.integers(0, output_dim, input_dim) and
s = rng.choice([-1, 1], input_dim), as the original. The original loops in Python over the input columns; here
the host kernel is one numba pass over each row (rows in parallel) and the device kernel is a sorted segment sum.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numba
import numpy as np

import jaxmodels_kernels.numba_config  # noqa: F401  (threading layer before the first parallel kernel)

from jaxmodels_kernels.seeding import as_generator


@dataclasses.dataclass(frozen=True, eq=False)
class CountSketchParams:
    """bucket_indices [input_dim] int64 in [0, output_dim), signs [input_dim] float32 of +-1."""

    bucket_indices: np.ndarray
    signs: np.ndarray
    input_dim: int
    output_dim: int

    def __post_init__(self):
        if self.bucket_indices.shape != (self.input_dim,) or self.signs.shape != (self.input_dim,):
            raise ValueError(f"CountSketchParams: bucket_indices {self.bucket_indices.shape} and signs "
                             f"{self.signs.shape} must both have shape [input_dim] = ({self.input_dim},)")
        if self.input_dim and (self.bucket_indices.min() < 0 or self.bucket_indices.max() >= self.output_dim):
            raise ValueError(f"CountSketchParams: bucket_indices must lie in [0, {self.output_dim})")

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays keyed as the original checkpoint's `cs_*` fields (without the prefix)."""
        return {"bucket_indices": self.bucket_indices, "signs": self.signs,
                "input_dim": np.int64(self.input_dim), "output_dim": np.int64(self.output_dim)}

    @classmethod
    def from_arrays(cls, d: dict) -> "CountSketchParams":
        return cls(bucket_indices=np.asarray(d["bucket_indices"], np.int64), signs=np.asarray(d["signs"], np.float32),
                   input_dim=int(d["input_dim"]), output_dim=int(d["output_dim"]))


def make_count_sketch(input_dim: int, output_dim: int, *, seed: int | np.random.Generator) -> CountSketchParams:
    """Draws a CountSketch from input_dim to output_dim features (buckets first, then signs)."""
    if input_dim < 1 or output_dim < 1:
        raise ValueError(f"make_count_sketch: input_dim and output_dim must be >= 1, got {input_dim}, {output_dim}")
    rng = as_generator(seed, "make_count_sketch")
    h = rng.integers(0, output_dim, size=input_dim).astype(np.int64)
    s = rng.choice(np.array([-1.0, 1.0], np.float32), size=input_dim)
    return CountSketchParams(bucket_indices=h, signs=s, input_dim=input_dim, output_dim=output_dim)


@numba.njit(parallel=True, cache=True)
def _count_sketch_rows(x, h, s, out):
    for r in numba.prange(x.shape[0]):
        row = out[r]
        xr = x[r]
        for j in range(x.shape[1]):
            row[h[j]] += s[j] * xr[j]


def _check_input(x_shape, params: CountSketchParams) -> None:
    if len(x_shape) == 0 or x_shape[-1] != params.input_dim:
        raise ValueError(f"apply_count_sketch: input of shape {tuple(x_shape)} must end in input_dim "
                         f"{params.input_dim} (shape [..., {params.input_dim}])")


def apply_count_sketch_host(x: np.ndarray, params: CountSketchParams) -> np.ndarray:
    """numba CountSketch: x of shape [..., input_dim] -> float32 of shape [..., output_dim]."""
    x = np.ascontiguousarray(x, np.float32)
    _check_input(x.shape, params)
    rows = x.reshape(-1, params.input_dim)
    out = np.zeros((rows.shape[0], params.output_dim), np.float32)
    _count_sketch_rows(rows, params.bucket_indices, params.signs, out)
    return out.reshape(*x.shape[:-1], params.output_dim)


def apply_count_sketch_jax(x: jax.Array, params: CountSketchParams) -> jax.Array:
    """Jittable CountSketch: x of shape [..., input_dim] -> float32 of shape [..., output_dim].

    Columns are visited in bucket order so the scatter is a sorted segment sum over the input axis.
    """
    x = jnp.asarray(x, jnp.float32)
    _check_input(x.shape, params)
    order = np.argsort(params.bucket_indices, kind="stable")
    cols = jnp.take(x, jnp.asarray(order), axis=-1) * jnp.asarray(params.signs[order])  # [..., input_dim]
    moved = jnp.moveaxis(cols, -1, 0)  # [input_dim, ...]
    y = jax.ops.segment_sum(moved, jnp.asarray(params.bucket_indices[order]), num_segments=params.output_dim,
                            indices_are_sorted=True)  # [output_dim, ...]
    return jnp.moveaxis(y, 0, -1)


def apply_count_sketch(x, params: CountSketchParams):
    """CountSketch of x of shape [..., input_dim] -> [..., output_dim]: JAX for jax arrays, numba otherwise."""
    if isinstance(x, jax.Array):
        return apply_count_sketch_jax(x, params)
    return apply_count_sketch_host(x, params)


def reference_count_sketch(x: np.ndarray, params: CountSketchParams) -> np.ndarray:
    """Plain reference: the dense sketch matrix S [input_dim, output_dim], Y = X S in float64."""
    s = np.zeros((params.input_dim, params.output_dim))
    s[np.arange(params.input_dim), params.bucket_indices] = params.signs
    return np.asarray(x, np.float64) @ s
