"""Classifier-based routing: a light softmax-regression head on the base model's mean-pooled hidden states."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@jax.jit
def _pooled(graphdef, state, ids, mask):
    model = nnx.merge(graphdef, state)
    x, _ = model.hidden_states(ids, causal=True, attention_mask=mask)  # [B, T, D]
    m = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)  # [B, D]


def pooled_features(model: nnx.Module, ids, mask, *, batch_size: int = 64) -> np.ndarray:
    """ids, mask [B, T] (left- or right-padded) -> mean of the final hidden states over real tokens [B, D]."""
    graphdef, state = nnx.split(model)
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, np.int32)
    parts = [np.asarray(_pooled(graphdef, state, ids[i:i + batch_size], mask[i:i + batch_size]))
             for i in range(0, len(ids), batch_size)]
    return np.concatenate(parts)


@dataclasses.dataclass(frozen=True)
class HiddenStateClassifier:
    """labels [C]; weights [D, C]; bias [C]; feature mean/scale [D] (standardisation)."""

    labels: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: Sequence[str], *, steps: int = 300, lr: float = 0.05,
            weight_decay: float = 1e-3, seed: int = 0) -> HiddenStateClassifier:
        """Softmax regression on features [B, D] with string labels [B], full-batch Adam."""
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
            raise ValueError(f"classifier needs features [B, D] and B labels, got features {features.shape} and "
                             f"{len(labels)} labels")
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise ValueError(f"classifier needs at least two classes, got {classes}")
        y = jnp.asarray([classes.index(label) for label in labels])
        mean, scale = features.mean(0), features.std(0) + 1e-6
        x = jnp.asarray((features - mean) / scale)
        params = {"w": 0.01 * jax.random.normal(jax.random.key(seed), (x.shape[1], len(classes))),
                  "b": jnp.zeros(len(classes))}
        tx = optax.adamw(lr, weight_decay=weight_decay)

        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

        def body(_, carry):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, tx.init(p))))(params)
        return cls(classes, np.asarray(params["w"]), np.asarray(params["b"]), mean, scale)

    def predict(self, features: np.ndarray) -> list[str]:
        """features [B, D] -> B labels."""
        logits = ((np.asarray(features, np.float32) - self.mean) / self.scale) @ self.weights + self.bias
        return [self.labels[i] for i in logits.argmax(-1)]
