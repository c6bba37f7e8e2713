"""Block subsampled randomised Hadamard transform (SRHT), as the original's `feature_ops.py`.

For an input of width `input_dim`: P = next_pow2(input_dim), tiles = ceil(target_dim / P). Tile t has random
signs [P] and a permutation [P]. One row x is zero-padded to P; tile t contributes
v = FWHT(x * signs_t) / sqrt(P), and v[perm_t[:take]] * scale fills the next `take` output slots until
`target_dim` are filled, with scale = sqrt(P / target_dim). Block RMSNorm over `block_size` outputs follows.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels_kernels.fwht import fwht_host, fwht_jax, hadamard, next_pow2
from jaxmodels_kernels.rmsnorm import block_rmsnorm_host, block_rmsnorm_jax
from jaxmodels_kernels.seeding import as_generator


@dataclasses.dataclass(frozen=True, eq=False)
class SRHTParams:
    """signs [tiles, P] float32 of +-1, permutation [tiles, P] int64, and the sizes that define the map."""

    signs: np.ndarray
    permutation: np.ndarray
    input_dim: int
    padded_dim: int
    target_dim: int
    block_size: int
    block_eps: float
    scale: float
    tile_count: int

    def __post_init__(self):
        shape = (self.tile_count, self.padded_dim)
        if self.signs.shape != shape or self.permutation.shape != shape:
            raise ValueError(f"SRHTParams: signs {self.signs.shape} and permutation {self.permutation.shape} "
                             f"must both have shape [tiles, P] = {shape}")
        if self.padded_dim != next_pow2(self.input_dim):
            raise ValueError(f"SRHTParams: padded_dim {self.padded_dim} != next_pow2(input_dim {self.input_dim})")

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays keyed as the original checkpoint's `srht_*` fields (without the prefix)."""
        return {"signs": self.signs, "permutation": self.permutation, "input_dim": np.int64(self.input_dim),
                "padded_dim": np.int64(self.padded_dim), "target_dim": np.int64(self.target_dim),
                "block_size": np.int64(self.block_size), "block_eps": np.float64(self.block_eps),
                "scale": np.float64(self.scale), "tile_count": np.int64(self.tile_count)}

    @classmethod
    def from_arrays(cls, d: dict) -> "SRHTParams":
        return cls(signs=np.asarray(d["signs"], np.float32), permutation=np.asarray(d["permutation"], np.int64),
                   input_dim=int(d["input_dim"]), padded_dim=int(d["padded_dim"]),
                   target_dim=int(d["target_dim"]), block_size=int(d["block_size"]),
                   block_eps=float(d["block_eps"]), scale=float(d["scale"]), tile_count=int(d["tile_count"]))


def make_block_srht(input_dim: int, target_dim: int = 4096, block_size: int = 256, block_eps: float = 1e-6, *,
                    seed: int | np.random.Generator) -> SRHTParams:
    """Draws an SRHT; per tile, in order: signs = rng.choice([-1, 1], P), then perm = rng.permutation(P)."""
    if input_dim < 1 or target_dim < 1:
        raise ValueError(f"make_block_srht: input_dim and target_dim must be >= 1, got {input_dim}, {target_dim}")
    if block_size < 0:
        raise ValueError(f"make_block_srht: block_size must be >= 0 (0 disables block RMSNorm), got {block_size}")
    rng = as_generator(seed, "make_block_srht")
    p = next_pow2(input_dim)
    tiles = math.ceil(target_dim / p)
    signs = np.empty((tiles, p), np.float32)
    perm = np.empty((tiles, p), np.int64)
    for t in range(tiles):
        signs[t] = rng.choice(np.array([-1.0, 1.0], np.float32), size=p)
        perm[t] = rng.permutation(p)
    return SRHTParams(signs=signs, permutation=perm, input_dim=input_dim, padded_dim=p, target_dim=target_dim,
                      block_size=block_size, block_eps=block_eps, scale=math.sqrt(p / target_dim), tile_count=tiles)


def _check_input(x_shape, params: SRHTParams) -> None:
    if len(x_shape) == 0 or x_shape[-1] != params.input_dim:
        raise ValueError(f"apply_block_srht: input of shape {tuple(x_shape)} must end in input_dim "
                         f"{params.input_dim} (shape [..., {params.input_dim}])")


def _slices(params: SRHTParams):
    filled = 0
    for t in range(params.tile_count):
        take = min(params.padded_dim, params.target_dim - filled)
        yield t, filled, take
        filled += take


def apply_block_srht_host(x: np.ndarray, params: SRHTParams) -> np.ndarray:
    """Host SRHT (numba FWHT): x of shape [..., input_dim] -> float32 of shape [..., target_dim]."""
    x = np.asarray(x, np.float32)
    _check_input(x.shape, params)
    lead = x.shape[:-1]
    rows = x.reshape(-1, params.input_dim)
    out = np.empty((rows.shape[0], params.target_dim), np.float32)
    inv = 1.0 / math.sqrt(params.padded_dim)
    for t, start, take in _slices(params):
        v = np.zeros((rows.shape[0], params.padded_dim), np.float32)  # [B, P], zero padding included
        np.multiply(rows, params.signs[t, :params.input_dim], out=v[:, :params.input_dim])
        fwht_host(v, inplace=True)
        out[:, start:start + take] = v[:, params.permutation[t, :take]] * np.float32(inv * params.scale)
    out = block_rmsnorm_host(out, params.block_size, params.block_eps)
    return out.reshape(*lead, params.target_dim)


def apply_block_srht_jax(x: jax.Array, params: SRHTParams) -> jax.Array:
    """Jittable SRHT: x of shape [..., input_dim] -> float32 of shape [..., target_dim]."""
    x = jnp.asarray(x, jnp.float32)
    _check_input(x.shape, params)
    pad = [(0, 0)] * (x.ndim - 1) + [(0, params.padded_dim - params.input_dim)]
    xp = jnp.pad(x, pad)  # [..., P]
    inv = 1.0 / math.sqrt(params.padded_dim)
    parts = []
    for t, _, take in _slices(params):
        v = fwht_jax(xp * jnp.asarray(params.signs[t]))
        parts.append(jnp.take(v, jnp.asarray(params.permutation[t, :take]), axis=-1) * (inv * params.scale))
    out = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
    return block_rmsnorm_jax(out, params.block_size, params.block_eps)


def apply_block_srht(x, params: SRHTParams):
    """SRHT of x of shape [..., input_dim] -> [..., target_dim]: JAX for jax arrays, numba/NumPy otherwise."""
    if isinstance(x, jax.Array):
        return apply_block_srht_jax(x, params)
    return apply_block_srht_host(x, params)


def reference_block_srht(x: np.ndarray, params: SRHTParams) -> np.ndarray:
    """Plain per-row reference: dense Hadamard products, float64, for tests on small P."""

    x = np.asarray(x, np.float64).reshape(-1, params.input_dim)
    h = hadamard(params.padded_dim, np.float64)
    out = np.zeros((x.shape[0], params.target_dim))
    for r in range(x.shape[0]):
        xp = np.zeros(params.padded_dim)
        xp[:params.input_dim] = x[r]
        for t, start, take in _slices(params):
            v = h @ (xp * params.signs[t]) / math.sqrt(params.padded_dim)
            out[r, start:start + take] = v[params.permutation[t, :take]] * params.scale
    return block_rmsnorm_host(out, params.block_size, params.block_eps)
