"""A per-sample NumPy implementation of the HTFR rule, written like the original (`htfr/model.py`, 6088ffc).

One sample at a time, Python loops over tensors: anchors -delta_i n_i rebuilt after every training step,
candidates from an exact L2 scan of the anchors, `local` per candidate, a full scan when fewer than k are local,
hand-written updates, usage statistics, the error queue and relocation. It is the oracle for the jitted field
(tests) and the baseline of `python -m benchmarks htfr`. It keeps the state in float32 (the original: float16)
and shares only `reference_weights` and the relocation draws with the JAX code.
"""

from __future__ import annotations

import numpy as np

from jaxmodels.htfr.config import HTFRConfig
from jaxmodels.htfr.field import relocation_draw
from jaxmodels.htfr.hypertensor import INTERPOLATIONS, reference_weights
from jaxmodels.htfr.state import FieldState


class ReferenceField:
    """Copies a FieldState to NumPy (controls as the original's [M, O, 3]) and runs the rule sample by sample.

    anchor_dtype: the precision of the anchor scan. float32 is the original's; with D in the thousands its
    rounding (~1e-7 * ||x||^2) can swap candidates whose anchor distances nearly tie, so exact comparisons with
    the jitted field (which ranks the same distances from d, in closed form) use float64.
    """

    def __init__(self, state: FieldState, cfg: HTFRConfig, *, anchor_dtype=np.float32):
        self.cfg = cfg
        self.anchor_dtype = anchor_dtype
        self.normals = np.array(state.normals, np.float32)
        self.deltas = np.array(state.deltas, np.float32)
        self.dneg = np.array(state.dneg, np.float32)
        self.dpos = np.array(state.dpos, np.float32)
        self.taus = np.array(state.taus, np.float32)
        self.controls = np.ascontiguousarray(np.transpose(np.array(state.controls, np.float32), (0, 2, 1)))
        self.interp = [INTERPOLATIONS[i] for i in np.asarray(state.interp)]
        self.ref = np.array(state.ref_radius, np.float32)
        self.usage = np.array(state.usage, np.float32)
        self.avg_dist = np.array(state.avg_dist, np.float32)
        self.loss_trace = np.array(state.loss_trace, np.float32)
        stamps = np.asarray(state.queue_stamp)
        order = np.argsort(np.where(stamps >= 0, stamps, np.iinfo(np.int32).max), kind="stable")
        self.queue = [(np.array(state.queue_x[s], np.float32), float(state.queue_loss[s]))
                      for s in order if stamps[s] >= 0]
        self.relocations = int(state.relocations)
        self.key = state.key
        self._anchors = None

    def local(self, i: int, x: np.ndarray):
        """(d, value [O], w [3], g = dvalue/dd [O]) of tensor i at x [D]."""
        d = float(np.dot(self.normals[i], x) + self.deltas[i])
        w, dw, _ = reference_weights(self.interp[i], d, float(self.dneg[i]), float(self.dpos[i]),
                                     float(self.ref[i]))
        w, dw = np.asarray(w, np.float32), np.asarray(dw, np.float32)
        return d, self.controls[i] @ w, w, self.controls[i] @ dw, dw

    def select(self, x: np.ndarray, k: int):
        """The active set: a list of (i, d, value, w, g, dw) sorted by |d| (ties: lower index first)."""
        if self._anchors is None:
            self._anchors = -self.deltas[:, None] * self.normals  # rebuilt after every training step
        m = self.normals.shape[0]
        dist = np.sum((self._anchors.astype(self.anchor_dtype, copy=False) - x) ** 2, axis=1)
        limit = min(k * self.cfg.candidate_multiplier, m)
        cand = np.argsort(dist, kind="stable")[:limit]
        cache, fallback = [], []
        for i in cand:
            r = (int(i), *self.local(int(i), x))
            (fallback if abs(r[1]) > self.cfg.radius else cache).append(r)
        if len(cache) < k:
            seen = set(int(i) for i in cand)
            for i in range(m):
                if i not in seen:
                    r = (i, *self.local(i, x))
                    (fallback if abs(r[1]) > self.cfg.radius else cache).append(r)
        if not cache:
            cache = fallback
        cache.sort(key=lambda r: (abs(r[1]), r[0]))
        return cache[:min(k, len(cache))]

    def weights(self, active) -> np.ndarray:
        absd = np.array([abs(r[1]) for r in active], np.float64)
        if self.cfg.weight_mode == "softmax":
            z = -absd / (self.taus[[r[0] for r in active]].astype(np.float64) + 1e-12)
            e = np.exp(z - z.max())
        else:
            e = 1.0 / (absd + self.cfg.epsilon)
        return (e / e.sum()).astype(np.float32)

    def predict(self, x, k: int | None = None) -> np.ndarray:
        """x [D] -> prediction [O]."""
        x = np.asarray(x, np.float32)
        active = self.select(x, k or self.cfg.top_k)
        lam = self.weights(active)
        return sum(lam[j] * r[2] for j, r in enumerate(active)).astype(np.float32)

    def predict_and_update(self, x, y, loss: str = "mse"):
        """One training sample: x [D], y [O] or an int label -> (prediction before the update [O], loss)."""
        cfg = self.cfg
        x = np.asarray(x, np.float32)
        active = self.select(x, cfg.train_top_k)
        lam = self.weights(active)
        yhat = sum(lam[j] * r[2] for j, r in enumerate(active)).astype(np.float32)
        if loss == "mse":
            e = yhat - np.asarray(y, np.float32)
            value = float(np.mean(e * e))
        else:
            z = yhat.astype(np.float64) - yhat.max()
            logp = z - np.log(np.exp(z).sum())
            p = np.exp(logp)
            if np.ndim(y) == 0:
                value, target = float(-logp[int(y)]), np.eye(yhat.shape[0])[int(y)]
            else:
                target = np.asarray(y, np.float64)
                value = float(-(target * logp).sum())
            e = (p - target).astype(np.float32)
        for j, (i, d, _, w, g, dw) in enumerate(active):
            self.controls[i] = self.controls[i] - cfg.eta * lam[j] * np.outer(e, w)
            if np.any(dw != 0):  # d strictly inside the band
                c = float(np.dot(e, g))
                n = self.normals[i] - cfg.eta_g * lam[j] * c * x
                self.normals[i] = n / np.linalg.norm(n)
                self.deltas[i] = self.deltas[i] - cfg.eta_g * lam[j] * c
        self._anchors = None
        dec = cfg.usage_decay
        for i, d, *_ in active:
            self.usage[i] = dec * self.usage[i] + 1.0
            self.avg_dist[i] = dec * self.avg_dist[i] + (1 - dec) * abs(d)
            self.loss_trace[i] = dec * self.loss_trace[i] + (1 - dec) * value
        if value >= cfg.error_threshold:
            self.queue.append((x.copy(), value))
            if len(self.queue) > cfg.max_error_queue:
                self.queue.pop(0)
        if len(self.queue) >= cfg.relocation_interval:
            self._relocate()
        return yhat, value

    def _relocate(self) -> None:
        idle = int(np.argmin(self.usage))
        pop = max(range(len(self.queue)), key=lambda j: (self.queue[j][1], -j))
        sample, _ = self.queue.pop(pop)
        n, span, cj = (np.asarray(a) for a in relocation_draw(self.key, self.relocations, self.normals.shape[1],
                                                              self.controls.shape[1]))
        self.normals[idle] = n
        self.deltas[idle] = -float(np.dot(n, sample))
        self.dneg[idle], self.dpos[idle] = -span, span
        self.controls[idle] = cj.T
        self.usage[idle], self.avg_dist[idle], self.loss_trace[idle] = 1.0, 0.0, 0.0
        self.relocations += 1
        self._anchors = None
