"""ProjectionStack: optional CountSketch -> one or more block SRHTs (outputs concatenated) -> optional linear.

As the original `feature_ops.ProjectionStack`: extra features are concatenated to the raw input and need a
CountSketch stage; output_dim = sum of the SRHT target dims (or the post-linear width). The output dtype is
float32 by default (the original cast to float16; pass output_dtype=np.float16 for that).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels_kernels.countsketch import CountSketchParams, apply_count_sketch_host, apply_count_sketch_jax
from jaxmodels_kernels.rmsnorm import block_rmsnorm, block_rmsnorm_host, block_rmsnorm_jax
from jaxmodels_kernels.srht import SRHTParams, apply_block_srht_host, apply_block_srht_jax

__all__ = ["ProjectionStack", "block_rmsnorm", "block_rmsnorm_host", "block_rmsnorm_jax"]


@dataclasses.dataclass(frozen=True, eq=False)
class ProjectionStack:
    """raw_dim -> output_dim features. post_linear, when given, has shape [sum(srht target dims), F_out]."""

    raw_dim: int
    srht_params: tuple[SRHTParams, ...]
    countsketch: CountSketchParams | None = None
    post_linear: np.ndarray | None = None
    output_dtype: type = np.float32

    def __post_init__(self):
        if not self.srht_params:
            raise ValueError("ProjectionStack needs at least one SRHT stage (srht_params is empty)")
        width = self.countsketch.output_dim if self.countsketch is not None else self.raw_dim
        if self.countsketch is not None and self.countsketch.input_dim < self.raw_dim:
            raise ValueError(f"ProjectionStack: CountSketch input_dim {self.countsketch.input_dim} is smaller than "
                             f"raw_dim {self.raw_dim}")
        for i, p in enumerate(self.srht_params):
            if p.input_dim != width:
                raise ValueError(f"ProjectionStack: SRHT {i} has input_dim {p.input_dim}, expected {width} "
                                 f"({'CountSketch output_dim' if self.countsketch is not None else 'raw_dim'})")
        srht_out = sum(p.target_dim for p in self.srht_params)
        if self.post_linear is not None and (self.post_linear.ndim != 2 or self.post_linear.shape[0] != srht_out):
            raise ValueError(f"ProjectionStack: post_linear has shape {self.post_linear.shape}, expected "
                             f"[{srht_out}, F_out] (rows = sum of SRHT target dims)")

    @property
    def output_dim(self) -> int:
        if self.post_linear is not None:
            return int(self.post_linear.shape[1])
        return sum(p.target_dim for p in self.srht_params)

    def _raw(self, x, extra, concat):
        if x.shape[-1] != self.raw_dim:
            raise ValueError(f"ProjectionStack.project: input of shape {tuple(x.shape)} must end in raw_dim "
                             f"{self.raw_dim}")
        if extra is None:
            return x
        if self.countsketch is None:
            raise ValueError("ProjectionStack.project: extra features need a CountSketch stage (countsketch=None)")
        width = self.raw_dim + extra.shape[-1]
        if width != self.countsketch.input_dim:
            raise ValueError(f"ProjectionStack.project: raw_dim {self.raw_dim} + extra {extra.shape[-1]} = {width}, "
                             f"expected CountSketch input_dim {self.countsketch.input_dim}")
        return concat([x, extra], axis=-1)

    def project(self, x: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """Host path (numba kernels): x [..., raw_dim], extra [..., E] -> [..., output_dim] in output_dtype."""
        x = np.asarray(x, np.float32)
        z = self._raw(x, None if extra is None else np.asarray(extra, np.float32), np.concatenate)
        if self.countsketch is not None:
            if z.shape[-1] < self.countsketch.input_dim:  # raw input without extras: pad the extra slots with 0
                z = np.concatenate([z, np.zeros((*z.shape[:-1], self.countsketch.input_dim - z.shape[-1]),
                                                np.float32)], axis=-1)
            z = apply_count_sketch_host(z, self.countsketch)
        y = np.concatenate([apply_block_srht_host(z, p) for p in self.srht_params], axis=-1)
        if self.post_linear is not None:
            y = y @ self.post_linear.astype(np.float32)
        return y.astype(self.output_dtype)

    def project_jax(self, x: jax.Array, extra: jax.Array | None = None) -> jax.Array:
        """Jittable device path with the same semantics as `project`."""
        x = jnp.asarray(x, jnp.float32)
        z = self._raw(x, None if extra is None else jnp.asarray(extra, jnp.float32), jnp.concatenate)
        if self.countsketch is not None:
            if z.shape[-1] < self.countsketch.input_dim:
                pad = [(0, 0)] * (z.ndim - 1) + [(0, self.countsketch.input_dim - z.shape[-1])]
                z = jnp.pad(z, pad)
            z = apply_count_sketch_jax(z, self.countsketch)
        y = jnp.concatenate([apply_block_srht_jax(z, p) for p in self.srht_params], axis=-1)
        if self.post_linear is not None:
            y = y @ jnp.asarray(self.post_linear, jnp.float32)
        return y.astype(self.output_dtype)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays: srht_count, srht_{i}_srht_<field>, cs_<field>, post_linear (as the original's keys)."""
        d: dict[str, np.ndarray] = {"raw_dim": np.int64(self.raw_dim), "srht_count": np.int64(len(self.srht_params))}
        for i, p in enumerate(self.srht_params):
            d.update({f"srht_{i}_srht_{k}": v for k, v in p.to_dict().items()})
        if self.countsketch is not None:
            d.update({f"cs_{k}": v for k, v in self.countsketch.to_dict().items()})
        if self.post_linear is not None:
            d["post_linear"] = self.post_linear
        return d

    @classmethod
    def from_arrays(cls, d: dict, *, raw_dim: int | None = None, output_dtype=np.float32) -> "ProjectionStack":
        """Inverse of to_dict (keys without a stage prefix)."""
        count = int(d["srht_count"])
        prefix = "srht_{}_srht_"
        srhts = tuple(SRHTParams.from_arrays({k[len(prefix.format(i)):]: v for k, v in d.items()
                                              if k.startswith(prefix.format(i))}) for i in range(count))
        cs = None
        if "cs_input_dim" in d:
            cs = CountSketchParams.from_arrays({k[3:]: v for k, v in d.items() if k.startswith("cs_")})
        if raw_dim is None:
            raw_dim = int(d["raw_dim"]) if "raw_dim" in d else (cs.input_dim if cs is not None else srhts[0].input_dim)
        post = np.asarray(d["post_linear"], np.float32) if "post_linear" in d else None
        return cls(raw_dim=raw_dim, srht_params=srhts, countsketch=cs, post_linear=post, output_dtype=output_dtype)
