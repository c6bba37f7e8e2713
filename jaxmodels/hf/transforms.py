"""Named, invertible tensor transforms between Hugging Face (PyTorch) layouts and ours.

Each transform maps a tensor both ways given the shape on the other side, so one table serves import
and export. No transform is ever chosen from a tensor's rank.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str = "identity"

    def to_ours(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return x

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return x

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)


@dataclasses.dataclass(frozen=True)
class LinearKernel:
    """torch `nn.Linear.weight` [prod(out), prod(in)] <-> our kernel [*in_shape, *out_shape].

    in_ndim is the number of leading kernel axes that are inputs: 1 for [D, N, H] (q/k/v, MLP),
    2 for [N, H, D] (the attention output projection).
    """

    in_ndim: int = 1
    name: str = "linear"

    def to_ours(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.ascontiguousarray(x.T).reshape(shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(math.prod(x.shape[: self.in_ndim]), -1).T)

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape[self.in_ndim:]), math.prod(shape[: self.in_ndim]))


@dataclasses.dataclass(frozen=True)
class Flatten:
    """torch bias [N*H] <-> ours [N, H]."""

    name: str = "flatten"

    def to_ours(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return x.reshape(shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(-1)

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)


IDENTITY = Identity()
LINEAR = LinearKernel(1)
LINEAR_FROM_HEADS = LinearKernel(2)
FLATTEN = Flatten()
