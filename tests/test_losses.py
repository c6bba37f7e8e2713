"""Losses against hand computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels.losses import compute_lm_loss, compute_mlm_loss, compute_prediction_loss


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_lm_loss_is_shifted_cross_entropy():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 5, 7).astype(np.float32)
    labels = rng.randint(0, 7, (2, 5))
    labels[1, 3] = -100
    lp = log_softmax(logits.astype(np.float64))
    terms = [-lp[b, t, labels[b, t + 1]] for b in range(2) for t in range(4) if labels[b, t + 1] != -100]
    np.testing.assert_allclose(compute_lm_loss(jnp.asarray(logits), jnp.asarray(labels)), np.mean(terms), rtol=1e-6)
    assert len(terms) == 7


def test_mlm_loss_with_label_smoothing_still_ignores_masked_positions():
    rng = np.random.RandomState(1)
    logits = rng.randn(2, 4, 5).astype(np.float32)
    labels = np.full((2, 4), -100)
    labels[0, 1], labels[1, 3] = 2, 4
    eps = 0.1
    lp = log_softmax(logits.astype(np.float64))
    expected = np.mean([-(1 - eps) * lp[b, t, labels[b, t]] - eps * lp[b, t].mean() for b, t in ((0, 1), (1, 3))])
    got = compute_mlm_loss(jnp.asarray(logits), jnp.asarray(labels), 5, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    plain = np.mean([-lp[b, t, labels[b, t]] for b, t in ((0, 1), (1, 3))])
    np.testing.assert_allclose(compute_mlm_loss(jnp.asarray(logits), jnp.asarray(labels)), plain, rtol=1e-6)
    with pytest.raises(ValueError, match="logits have 5 classes, expected vocab_size=6"):
        compute_mlm_loss(jnp.asarray(logits), jnp.asarray(labels), 6)


def test_all_ignored_gives_zero_not_nan():
    assert float(compute_mlm_loss(jnp.zeros((1, 3, 4)), jnp.full((1, 3), -100))) == 0.0


def test_regression_masks_nan_targets():
    logits = jnp.array([[1.0], [2.0], [3.0]])
    got = compute_prediction_loss(logits, jnp.array([1.5, np.nan, 2.0]), 1)
    np.testing.assert_allclose(got, (0.25 + 1.0) / 2, rtol=1e-6)


def test_multilabel_bce_masks_nan():
    logits = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    labels = np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)
    bce = lambda x, y: np.log1p(np.exp(-abs(x))) + max(x, 0) - x * y  # noqa: E731
    expected = np.mean([bce(0.5, 1.0), bce(2.0, 0.0), bce(0.0, 1.0)])
    got = compute_prediction_loss(jnp.asarray(logits), jnp.asarray(labels), 2, multilabel=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_classification_ignores_nan_and_minus_one():
    logits = np.random.RandomState(2).randn(4, 3).astype(np.float32)
    lp = log_softmax(logits.astype(np.float64))
    got = compute_prediction_loss(jnp.asarray(logits), jnp.array([2.0, np.nan, 0.0, -1.0]), 3)
    np.testing.assert_allclose(got, -(lp[0, 2] + lp[2, 0]) / 2, rtol=1e-6)


@pytest.mark.parametrize("logits, labels, kw, message", [
    (jnp.zeros((2, 3)), jnp.zeros((2,)), dict(num_labels=4), "prediction logits have 3 outputs, expected num_labels=4"),
    (jnp.zeros((2, 1)), jnp.zeros((2, 2)), dict(num_labels=1), r"regression labels must have shape \[B\] or \[B, 1\]"),
    (jnp.zeros((2, 3)), jnp.zeros((2,)), dict(num_labels=3, multilabel=True), "multilabel labels must have shape"),
    (jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32), dict(num_labels=3), r"class labels must have shape \[2\]"),
])
def test_prediction_loss_shape_errors(logits, labels, kw, message):
    with pytest.raises(ValueError, match=message):
        compute_prediction_loss(logits, labels, **kw)
