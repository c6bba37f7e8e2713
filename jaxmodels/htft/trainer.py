"""HTFTTrainer: one sequential pass over samples (train) or prediction only (evaluate), with the original's
metrics: cross-entropy of the pre-update truncated logits, perplexity, and the Stage 1 mean squared error."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from jaxmodels.htft.context import ContextBatch
from jaxmodels.htft.model import HypertensorFieldTransformer


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """logits [N, C], labels [N] -> -log softmax(logits)[label] [N] (float64)."""
    lp = log_softmax(np.asarray(logits, np.float64))
    return -lp[np.arange(lp.shape[0]), np.asarray(labels)]


def teacher_truncated_nll(logits: np.ndarray, shortlist: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The teacher's softmax restricted to the shortlist plus "other" = 1 - sum, scored on compact labels.

    logits [N, V] full-vocabulary teacher logits, shortlist [S], labels [N] in [0, S] -> nll [N].
    """
    p = np.exp(log_softmax(np.asarray(logits, np.float64)))
    short = p[:, shortlist]  # [N, S]
    other = np.clip(1.0 - short.sum(axis=1, keepdims=True), 1e-12, None)
    probs = np.concatenate([short, other], axis=1)  # [N, S + 1]
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))


def _summary(ce: np.ndarray, s1: np.ndarray, weights: np.ndarray, seconds: float) -> dict[str, float]:
    loss = float(np.sum(weights * ce) / np.sum(weights))
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "stage1_loss": float(np.mean(s1)),
            "samples": int(ce.shape[0]), "samples_per_s": ce.shape[0] / max(seconds, 1e-9)}


class HTFTTrainer:
    """Feeds ContextBatches to a HypertensorFieldTransformer in chunks of `chunk` samples (speed only: sequential
    mode gives the same result for any chunk)."""

    def __init__(self, model: HypertensorFieldTransformer, *, chunk: int = 64):
        self.model = model
        self.chunk = chunk

    def _run(self, batch: ContextBatch, labels, weights, train: bool,
             on_chunk: Callable[[int], None] | None) -> dict[str, float]:
        labels = np.asarray(labels, np.int64)
        n = labels.shape[0]
        if batch.context.shape[0] != n:
            raise ValueError(f"HTFTTrainer: {batch.context.shape[0]} contexts but {n} labels")
        weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
        ce, s1 = np.zeros(n), np.zeros(n)
        start = time.perf_counter()
        for lo in range(0, n, self.chunk):
            hi = min(n, lo + self.chunk)
            part = batch[lo:hi]
            logits, emb = self.model.step(part.context, part.tail, labels[lo:hi], part.stage1_target, train=train)
            ce[lo:hi] = cross_entropy(logits, labels[lo:hi])
            s1[lo:hi] = np.mean((emb - part.stage1_target) ** 2, axis=1)
            if on_chunk is not None:
                on_chunk(hi - lo)
        return _summary(ce, s1, weights, time.perf_counter() - start)

    def train(self, batch: ContextBatch, labels, weights=None, *, on_chunk=None) -> dict[str, float]:
        """One pass with updates; metrics of the predictions made before each update."""
        return self._run(batch, labels, weights, True, on_chunk)

    def evaluate(self, batch: ContextBatch, labels, weights=None, *, on_chunk=None) -> dict[str, float]:
        """Prediction only (no update)."""
        return self._run(batch, labels, weights, False, on_chunk)
