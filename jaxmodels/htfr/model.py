"""HTFRModel: a field of M hypertensors with the original's public methods, on top of the jitted field math."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels.htfr import field
from jaxmodels.htfr.config import LOSSES, HTFRConfig
from jaxmodels.htfr.hypertensor import INTERPOLATIONS, Hypertensor, interpolation_id
from jaxmodels.htfr.init import random_tensors
from jaxmodels.htfr.state import FieldState, make_state

MODES = ("sequential", "batched")


class HTFRModel:
    """M hypertensors over inputs [D] with outputs [O].

    `predict(x)` (x [D] or [B, D]) is pure. `predict_and_update(x, y, loss)` returns the predictions made before
    each update and applies the online rule: mode="sequential" is exactly the per-sample rule in order,
    mode="batched" predicts a whole batch from one state and applies the summed updates.
    """

    def __init__(self, state: FieldState, config: HTFRConfig | None = None):
        self.config = config or HTFRConfig()
        if state.size == 0:
            raise ValueError("HTFRModel: the field is empty (M = 0 hypertensors)")
        if state.queue_x.shape != (self.config.max_error_queue, state.input_dim):
            raise ValueError(f"HTFRModel: error queue of shape {state.queue_x.shape}, expected [Q, D] = "
                             f"({self.config.max_error_queue}, {state.input_dim})")
        self.state = state

    # ---- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, arrays: dict, config: HTFRConfig | None = None, *, seed: int = 0, dtype=jnp.float32,
                    assign_interpolations: bool = False) -> "HTFRModel":
        """From per-tensor arrays (as returned by init.random_tensors / kmeans_tensors). With
        assign_interpolations (and config.randomize_interpolations) each tensor's interpolation is drawn from
        config.interpolation_weights with `seed`; otherwise the given ids are kept."""
        config = config or HTFRConfig()
        arrays = dict(arrays)
        if assign_interpolations and config.randomize_interpolations:
            rng = np.random.default_rng(seed)
            arrays["interp"] = rng.choice(len(INTERPOLATIONS), size=len(arrays["deltas"]),
                                          p=config.interpolation_probabilities()).astype(np.int32)
        return cls(make_state(**arrays, queue_size=config.max_error_queue, seed=seed, dtype=dtype), config)

    @classmethod
    def random(cls, m: int, d_in: int, d_out: int, config: HTFRConfig | None = None, *, seed: int = 0,
               tau: float = 1.0, dtype=jnp.float32) -> "HTFRModel":
        """M random tensors (original draw order) with interpolations drawn from the config's mix, all seeded."""
        config = config or HTFRConfig()
        arrays = random_tensors(m, d_in, d_out, seed=seed, tau=tau, reference_radius=config.reference,
                                interpolation_probs=config.interpolation_probabilities()
                                if config.randomize_interpolations else None)
        return cls.from_arrays(arrays, config, seed=seed, dtype=dtype)

    @classmethod
    def from_tensors(cls, tensors: list[Hypertensor], config: HTFRConfig | None = None, *, seed: int = 0,
                     dtype=jnp.float32, keep_reference_radius: bool = False) -> "HTFRModel":
        """From Hypertensor objects, keeping each tensor's interpolation (never re-randomised).

        Every tensor's reference radius (the wavelet interpolation's scale floor) becomes the config's
        interpolation reference (5 * max_knn_radius by default), as the original's model sets it at
        construction; keep_reference_radius keeps each tensor's own `reference_radius` instead."""
        if not tensors:
            raise ValueError("HTFRModel.from_tensors: no tensors given; the field would be empty (M = 0)")
        config = config or HTFRConfig()
        arrays = _stack(tensors)
        if not keep_reference_radius:
            arrays["ref_radius"] = np.full(len(tensors), config.reference, np.float32)
        return cls.from_arrays(arrays, config, seed=seed, dtype=dtype)

    def tensors(self) -> list[Hypertensor]:
        """The field as Hypertensor objects (float32)."""
        s = jax.device_get(self.state)
        return [Hypertensor(s.normals[i], s.deltas[i], s.dneg[i], s.dpos[i], s.controls[i].T, s.taus[i],
                            INTERPOLATIONS[int(s.interp[i])], s.ref_radius[i]) for i in range(self.size)]

    def seed_random_tensors(self, count: int, *, seed: int, tau: float = 1.0) -> None:
        """Appends `count` random tensors (usage statistics 0)."""
        new = random_tensors(count, self.input_dim, self.output_dim, seed=seed, tau=tau,
                             reference_radius=self.config.reference,
                             interpolation_probs=self.config.interpolation_probabilities()
                             if self.config.randomize_interpolations else None)
        s = self.state
        cat = lambda a, b: jnp.concatenate([a, jnp.asarray(b, a.dtype)])  # noqa: E731
        self.state = s.replace(
            normals=cat(s.normals, new["normals"]), deltas=cat(s.deltas, new["deltas"]),
            dneg=cat(s.dneg, new["dneg"]), dpos=cat(s.dpos, new["dpos"]), taus=cat(s.taus, new["taus"]),
            controls=cat(s.controls, np.transpose(new["controls"], (0, 2, 1))), interp=cat(s.interp, new["interp"]),
            ref_radius=cat(s.ref_radius, new["ref_radius"]), usage=cat(s.usage, np.zeros(count)),
            avg_dist=cat(s.avg_dist, np.zeros(count)), loss_trace=cat(s.loss_trace, np.zeros(count)))

    # ---- sizes -----------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.state.size

    @property
    def input_dim(self) -> int:
        return self.state.input_dim

    @property
    def output_dim(self) -> int:
        return self.state.output_dim

    @property
    def interpolations(self) -> list[str]:
        return [INTERPOLATIONS[int(i)] for i in np.asarray(self.state.interp)]

    # ---- inference and training ------------------------------------------------------------------------------

    def _inputs(self, x, where: str) -> tuple[np.ndarray, bool]:
        x = np.asarray(x, np.float32)
        single = x.ndim == 1
        x2 = x[None] if single else x
        if x2.ndim != 2 or x2.shape[1] != self.input_dim:
            raise ValueError(f"HTFRModel.{where}: x of shape {x.shape} does not match the field's input width "
                             f"D = {self.input_dim} (expected [{self.input_dim}] or [B, {self.input_dim}])")
        bad = ~np.all(np.isfinite(x2), axis=1)
        if bad.any():
            raise ValueError(f"HTFRModel.{where}: x contains NaN or inf in rows {np.nonzero(bad)[0][:8].tolist()}")
        return x2, single

    def _targets(self, y, n: int, loss: str, where: str) -> np.ndarray:
        if loss not in LOSSES:
            raise ValueError(f"HTFRModel.{where}: unknown loss {loss!r}; expected one of {LOSSES}")
        y = np.asarray(y)
        if loss == "logits_ce" and np.issubdtype(y.dtype, np.integer):
            y = y.reshape(n) if y.size == n else y
            if y.shape != (n,) or y.min() < 0 or y.max() >= self.output_dim:
                raise ValueError(f"HTFRModel.{where}: integer labels must have shape [{n}] with values in "
                                 f"[0, {self.output_dim}), got shape {y.shape}")
            return y.astype(np.int32)
        y = y.astype(np.float32).reshape(n, -1) if y.size == n * self.output_dim else y
        if y.shape != (n, self.output_dim):
            raise ValueError(f"HTFRModel.{where}: targets of shape {y.shape}, expected [{n}, {self.output_dim}] "
                             f"(or [{self.output_dim}] for one sample)")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"HTFRModel.{where}: targets contain NaN or inf")
        return y

    def predict(self, x, *, k: int | None = None, batch_size: int | None = None) -> np.ndarray:
        """x [D] or [B, D] -> predictions [O] or [B, O], from the k (default top_k) nearest tensors."""
        x2, single = self._inputs(x, "predict")
        k = k or self.config.top_k
        bs = batch_size or max(1, min(256, (1 << 25) // max(1, min(k, self.size) * 3 * self.output_dim)))
        out = []
        for start in range(0, x2.shape[0], bs):
            chunk = x2[start:start + bs]
            pad = bs - chunk.shape[0] if x2.shape[0] > bs else 0  # one compiled shape per call pattern
            xp = np.concatenate([chunk, np.zeros((pad, self.input_dim), np.float32)]) if pad else chunk
            out.append(np.asarray(field.predict(self.state, jnp.asarray(xp), k=k, cfg=self.config))[:chunk.shape[0]])
        y = np.concatenate(out)
        return y[0] if single else y

    def predict_and_update(self, x, y, loss: str = "mse", *, train: bool = True, mode: str = "sequential",
                           return_losses: bool = False):
        """x [D] or [B, D], targets y ([O] / [B, O], or int labels for logits_ce) -> predictions before the
        update ([O] or [B, O]); with return_losses also the per-sample losses.

        Training selects train_top_k tensors per sample; train=False only evaluates, from top_k tensors (as the
        original, and as `predict`)."""
        if mode not in MODES:
            raise ValueError(f"HTFRModel.predict_and_update: mode {mode!r} is not one of {MODES}")
        x2, single = self._inputs(x, "predict_and_update")
        y2 = self._targets(y, x2.shape[0], loss, "predict_and_update")
        if not train:
            yhat, losses = field.evaluate(self.state, jnp.asarray(x2), jnp.asarray(y2), k=self.config.top_k,
                                          cfg=self.config, loss=loss)
            yhat, losses = np.asarray(yhat), np.asarray(losses)
        else:
            step = field.train_sequential if mode == "sequential" else field.train_batched
            chunk = self.config.chunk_size if mode == "sequential" else min(self.config.chunk_size, x2.shape[0])
            outs, ls = [], []
            for start in range(0, x2.shape[0], chunk):
                xc, yc = x2[start:start + chunk], y2[start:start + chunk]
                n = xc.shape[0]
                mask = np.arange(chunk) < n
                if n < chunk:
                    xc = np.concatenate([xc, np.zeros((chunk - n, self.input_dim), np.float32)])
                    yc = np.concatenate([yc, np.zeros((chunk - n, *yc.shape[1:]), yc.dtype)])
                self.state, yh, l = step(self.state, jnp.asarray(xc), jnp.asarray(yc), jnp.asarray(mask),
                                         cfg=self.config, loss=loss)
                outs.append(np.asarray(yh)[:n])
                ls.append(np.asarray(l)[:n])
            yhat, losses = np.concatenate(outs), np.concatenate(ls)
        if single:
            yhat, losses = yhat[0], losses[0]
        return (yhat, losses) if return_losses else yhat

    def locality_weights(self, distances, taus=None) -> np.ndarray:
        """Locality weights of signed distances [K] (taus [K], default 1) under the config's weight_mode."""
        d = jnp.abs(jnp.asarray(distances, jnp.float32))
        taus = jnp.ones_like(d) if taus is None else jnp.asarray(taus, jnp.float32)
        return np.asarray(field.locality_weights(d, taus, jnp.ones(d.shape, bool), self.config.weight_mode,
                                                 self.config.epsilon))

    def diagnostics(self) -> dict[str, float]:
        s = jax.device_get(self.state)
        return {"tensors": self.size, "mean_usage": float(np.mean(s.usage)), "unused": int(np.sum(s.usage == 0)),
                "mean_avg_distance": float(np.mean(s.avg_dist)), "mean_loss_trace": float(np.mean(s.loss_trace)),
                "queue_length": int(np.sum(s.queue_stamp >= 0)), "relocations": int(s.relocations)}

    def with_config(self, **changes) -> "HTFRModel":
        """The same state under a config with some fields changed (queue size must stay)."""
        return HTFRModel(self.state, dataclasses.replace(self.config, **changes))


def _stack(tensors: list[Hypertensor]) -> dict[str, np.ndarray]:
    d, o = tensors[0].input_dim, tensors[0].output_dim
    for i, t in enumerate(tensors):
        if t.input_dim != d or t.output_dim != o:
            raise ValueError(f"HTFRModel.from_tensors: tensor {i} has D={t.input_dim}, O={t.output_dim}; "
                             f"tensor 0 has D={d}, O={o}")
    return {"normals": np.stack([t.n.astype(np.float32) for t in tensors]),
            "deltas": np.array([t.delta for t in tensors], np.float32),
            "dneg": np.array([t.dneg for t in tensors], np.float32),
            "dpos": np.array([t.dpos for t in tensors], np.float32),
            "taus": np.array([t.tau for t in tensors], np.float32),
            "controls": np.stack([t.C.astype(np.float32) for t in tensors]),
            "interp": np.array([interpolation_id(t.interpolation) for t in tensors], np.int32),
            "ref_radius": np.array([t.reference_radius for t in tensors], np.float32)}
