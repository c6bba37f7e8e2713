"""Hyformer losses: shifted LM cross-entropy, MLM with ignore index and label smoothing, prediction losses.

All return float32 scalars and average over the entries that count (0 when none do).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

IGNORE_INDEX = -100


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def token_cross_entropy(logits: jax.Array, labels: jax.Array, *, ignore_index: int = IGNORE_INDEX,
                        label_smoothing: float = 0.0) -> jax.Array:
    """Mean CE of logits [..., V] against labels [...]; entries equal to ignore_index do not count.

    Label smoothing uses the target (1 - eps) * onehot + eps / V and still skips ignored entries.
    """
    logits = logits.astype(jnp.float32)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
    return _masked_mean(nll, valid)


def compute_lm_loss(logits: jax.Array, labels: jax.Array, *, shift_labels: bool = True,
                    ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """Next-token CE: logits [B, T, V] at t predict labels [B, T] at t + 1 (when shift_labels)."""
    if shift_labels:
        logits, labels = logits[:, :-1], labels[:, 1:]
    return token_cross_entropy(logits, labels, ignore_index=ignore_index)


def compute_mlm_loss(logits: jax.Array, labels: jax.Array, vocab_size: int | None = None, *,
                     label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """CE at every position whose label is not ignore_index; logits [B, T, V], labels [B, T]."""
    if vocab_size is not None and logits.shape[-1] != vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} classes, expected vocab_size={vocab_size}")
    return token_cross_entropy(logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing)


def compute_prediction_loss(logits: jax.Array, labels: jax.Array, num_labels: int, *,
                            multilabel: bool = False) -> jax.Array:
    """Loss of a prediction head; logits [B, L].

    * num_labels == 1: MSE over non-NaN targets (labels [B] or [B, 1]);
    * multilabel: BCE-with-logits over non-NaN entries of labels [B, L];
    * otherwise: CE over class ids labels [B]; NaN or -1 labels are ignored.
    """
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] != num_labels:
        raise ValueError(f"prediction logits have {logits.shape[-1]} outputs, expected num_labels={num_labels}")
    if num_labels == 1 and not multilabel:
        y = labels.astype(jnp.float32).reshape(logits.shape[0], -1)
        if y.shape[1] != 1:
            raise ValueError(f"regression labels must have shape [B] or [B, 1], got {tuple(labels.shape)}")
        valid = ~jnp.isnan(y)
        return _masked_mean(jnp.square(logits - jnp.where(valid, y, 0.0)), valid)
    if multilabel:
        y = labels.astype(jnp.float32)
        if y.shape != logits.shape:
            raise ValueError(f"multilabel labels must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        valid = ~jnp.isnan(y)
        return _masked_mean(optax.sigmoid_binary_cross_entropy(logits, jnp.where(valid, y, 0.0)), valid)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"class labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
    if jnp.issubdtype(labels.dtype, jnp.floating):
        labels = jnp.where(jnp.isnan(labels), -1, labels).astype(jnp.int32)
    return token_cross_entropy(logits, labels, ignore_index=-1)
