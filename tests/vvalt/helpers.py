"""Shared fixtures for the V.V.A.L.T tests: tiny prime configs and random inputs."""

from __future__ import annotations

import numpy as np

from jaxmodels.vvalt import VVALTConfig

TINY = VVALTConfig.tiny()  # I 23, F 13 (odd), T 7, H 29, L 3
WIDE = VVALTConfig(input_dim=11, frame_dim=17, task_dim=5, hidden_dim=None, num_labels=2, seed=7)  # I < F


def inputs(config: VVALTConfig, batch: int = 5, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((batch, config.input_dim)),
            rng.standard_normal((batch, config.task_dim)))


def adjacency(f: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    """A random symmetric 0/1 graph over the F frame coordinates (no self-loops), or a batch of them."""
    rng = np.random.default_rng(seed)
    shape = (f, f) if batch is None else (batch, f, f)
    a = (rng.random(shape) < 0.3).astype(np.float64)
    a = np.maximum(a, np.swapaxes(a, -1, -2))
    return a * (1 - np.eye(f))


def perturbed(weights: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """Every weight moved (biases become non-zero), so parity covers where each bias enters."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in weights.items()}
