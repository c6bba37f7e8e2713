"""The original NumPy core's initial weights, drawn exactly as it draws them, without its side effect.

Each of the original's components calls `np.random.seed(seed)` in its constructor and then draws from the
global legacy MT19937 stream. A fresh `np.random.RandomState(seed)` yields the same numbers, so we reproduce
every weight bit for bit without touching the caller's global NumPy RNG. All arrays are float64, keyed by
`<component>.<name>`, the parameter paths of `VVALTModel`.
"""

from __future__ import annotations

import numpy as np

from jaxmodels.vvalt.config import FRAME_NAMES, VVALTConfig


def orthogonal(rng: np.random.RandomState, rows: int, cols: int) -> np.ndarray:
    """One `randn(rows, cols)` draw made orthogonal by reduced QR (no sign fix on R, as the original)."""
    m = rng.randn(rows, cols)
    if rows >= cols:
        return np.linalg.qr(m)[0]  # [rows, cols], orthonormal columns
    return np.linalg.qr(m.T)[0].T  # [rows, cols], orthonormal rows


def original_weights(config: VVALTConfig) -> dict[str, np.ndarray]:
    """Every parameter of the model body, float64, as the original builds it for `config.seed`.

    Shapes: encoder.W_* [I, F], encoder.b_* [F], selector.W_task [T, 5], selector.b_task [5],
    projector.W_topology [F, F], attention.W_query/W_key/W_value/W_output [F, F], attention.b_output [F],
    refiner.W1 [F, H], refiner.b1 [H], refiner.W2 [H, F], refiner.b2 [F]. Biases start at zero.
    """
    i, f, t, h, s = config.input_dim, config.frame_dim, config.task_dim, config.resolved_hidden_dim, config.seed
    w: dict[str, np.ndarray] = {}

    rng = np.random.RandomState(s)  # encoder: five orthogonal draws in frame order
    for name in FRAME_NAMES:
        w[f"encoder.W_{name}"] = orthogonal(rng, i, f)
    for name in FRAME_NAMES:
        w[f"encoder.b_{name}"] = np.zeros(f)

    rng = np.random.RandomState(s)  # selector
    w["selector.W_task"] = rng.randn(t, len(FRAME_NAMES)) * 0.1
    w["selector.b_task"] = np.zeros(len(FRAME_NAMES))

    rng = np.random.RandomState(s)  # projector
    w["projector.W_topology"] = np.eye(f) + rng.randn(f, f) * 0.01

    rng = np.random.RandomState(s)  # attention: query, key, value, output, in that order
    for name in ("W_query", "W_key", "W_value", "W_output"):
        w[f"attention.{name}"] = rng.randn(f, f) * 0.1
    w["attention.b_output"] = np.zeros(f)

    rng = np.random.RandomState(s)  # refiner
    w["refiner.W1"] = rng.randn(f, h) * np.sqrt(2.0 / f)
    w["refiner.b1"] = np.zeros(h)
    w["refiner.W2"] = rng.randn(h, f) * np.sqrt(2.0 / h)
    w["refiner.b2"] = np.zeros(f)
    return w
