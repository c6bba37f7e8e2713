"""Explicit seeds for the host-side random draws of the kernels."""

from __future__ import annotations

import numpy as np


def as_generator(seed: int | np.random.Generator, where: str) -> np.random.Generator:
    """A NumPy Generator from an int seed (or the Generator itself); anything else raises naming `where`."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"{where}: seed must be an int or a numpy.random.Generator, got {type(seed).__name__}; "
                    "every random draw takes an explicit seed")
