"""Estimator-style HTFR (fit / partial_fit / predict / score), so a field is usable on ordinary tabular data.

Inputs are standardised with the statistics of the first fit; regression targets too. The field starts from
k-means tensors (or random ones) and then learns online with the original's rule, `epochs` shuffled passes.
"""

from __future__ import annotations

import numpy as np

from jaxmodels.htfr.config import HTFRConfig
from jaxmodels.htfr.init import kmeans_tensors, random_tensors
from jaxmodels.htfr.model import HTFRModel


class _HTFREstimator:
    loss = "mse"

    def __init__(self, n_tensors: int = 32, *, top_k: int = 16, train_top_k: int = 32, eta: float = 0.1,
                 eta_g: float = 0.005, max_knn_radius: float = 1.0, weight_mode: str = "softmax", tau: float = 1.0,
                 epochs: int = 10, init: str = "kmeans", mode: str = "sequential", chunk_size: int = 64,
                 seed: int = 0):
        if init not in ("kmeans", "random"):
            raise ValueError(f"{type(self).__name__}: init must be 'kmeans' or 'random', got {init!r}")
        self.n_tensors, self.top_k, self.train_top_k = n_tensors, top_k, train_top_k
        self.eta, self.eta_g, self.max_knn_radius, self.weight_mode = eta, eta_g, max_knn_radius, weight_mode
        self.tau, self.epochs, self.init, self.mode = tau, epochs, init, mode
        self.chunk_size, self.seed = chunk_size, seed
        self.model_: HTFRModel | None = None

    def _config(self) -> HTFRConfig:
        return HTFRConfig(top_k=self.top_k, train_top_k=self.train_top_k, eta=self.eta, eta_g=self.eta_g,
                          max_knn_radius=self.max_knn_radius, weight_mode=self.weight_mode,
                          randomize_interpolations=False, chunk_size=self.chunk_size)

    def _x(self, x, where: str) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.{where}: X must have shape [N, D] with N >= 1, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{type(self).__name__}.{where}: X contains NaN or inf")
        if self.model_ is not None and x.shape[1] != self.x_mean_.shape[0]:
            raise ValueError(f"{type(self).__name__}.{where}: X has {x.shape[1]} features, the estimator was fit "
                             f"with {self.x_mean_.shape[0]}")
        return x

    def _start(self, x: np.ndarray, t: np.ndarray) -> None:
        """Standardisation statistics and the initial field from the first data seen; t [N, O] targets."""
        self.x_mean_, self.x_std_ = x.mean(0), x.std(0) + 1e-12
        xs = (x - self.x_mean_) / self.x_std_
        m = min(self.n_tensors, x.shape[0])
        if self.init == "kmeans":
            arrays = kmeans_tensors(xs, t, m, seed=self.seed, tau=self.tau,
                                    reference_radius=5.0 * self.max_knn_radius)
        else:
            arrays = random_tensors(m, x.shape[1], t.shape[1], seed=self.seed, tau=self.tau,
                                    reference_radius=5.0 * self.max_knn_radius)
        self.model_ = HTFRModel.from_arrays(arrays, self._config(), seed=self.seed)
        self._rng = np.random.default_rng(self.seed)

    def _pass(self, x: np.ndarray, target: np.ndarray) -> None:
        order = self._rng.permutation(x.shape[0])
        xs = ((x - self.x_mean_) / self.x_std_).astype(np.float32)
        self.model_.predict_and_update(xs[order], target[order], self.loss, mode=self.mode)

    def fit(self, X, y):
        """Starts afresh: standardise, initialise, then `epochs` shuffled online passes."""
        self.model_ = None
        x = self._x(X, "fit")
        target, init_t = self._targets(y, x.shape[0], "fit", first=True)
        self._start(x, init_t)
        for _ in range(self.epochs):
            self._pass(x, target)
        return self

    def partial_fit(self, X, y):
        """One online pass over (X, y); the first call also initialises from this batch."""
        x = self._x(X, "partial_fit")
        target, init_t = self._targets(y, x.shape[0], "partial_fit", first=self.model_ is None)
        if self.model_ is None:
            self._start(x, init_t)
        self._pass(x, target)
        return self

    def _raw_predict(self, X) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(X, y) first")
        x = self._x(X, "predict")
        return self.model_.predict(((x - self.x_mean_) / self.x_std_).astype(np.float32))


class HTFRRegressor(_HTFREstimator):
    """Regression with an HTFR field (MSE rule). y of shape [N] or [N, O]."""

    def _targets(self, y, n: int, where: str, first: bool):
        y = np.asarray(y, np.float64)
        if y.shape[0] != n or y.ndim not in (1, 2):
            raise ValueError(f"HTFRRegressor.{where}: y of shape {y.shape}, expected [{n}] or [{n}, O]")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"HTFRRegressor.{where}: y contains NaN or inf")
        y2 = y[:, None] if y.ndim == 1 else y
        if first:
            self._single = y.ndim == 1
            self.y_mean_, self.y_std_ = y2.mean(0), y2.std(0) + 1e-12
        t = ((y2 - self.y_mean_) / self.y_std_).astype(np.float32)
        return t, t

    def predict(self, X) -> np.ndarray:
        """X [N, D] -> [N] (or [N, O])."""
        y = self._raw_predict(X) * self.y_std_ + self.y_mean_
        return y[:, 0] if self._single else y

    def score(self, X, y) -> float:
        """Coefficient of determination R^2 (averaged over outputs)."""
        y = np.asarray(y, np.float64).reshape(len(y), -1)
        p = self.predict(X).reshape(len(y), -1)
        return float(np.mean(1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)))


class HTFRClassifier(_HTFREstimator):
    """Classification with an HTFR field: logits over the classes, the original's `logits_ce` rule."""

    loss = "logits_ce"

    def _targets(self, y, n: int, where: str, first: bool):
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"HTFRClassifier.{where}: y of shape {y.shape}, expected [{n}]")
        if first:
            self.classes_ = np.unique(y)
        pos = np.searchsorted(self.classes_, y)
        if np.any(pos >= len(self.classes_)) or np.any(self.classes_[np.minimum(pos, len(self.classes_) - 1)] != y):
            raise ValueError(f"HTFRClassifier.{where}: labels outside the classes seen at fit {self.classes_.tolist()}")
        onehot = np.eye(len(self.classes_), dtype=np.float32)[pos]
        return pos.astype(np.int32), onehot

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self._raw_predict(X), axis=1)]

    def score(self, X, y) -> float:
        """Accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
