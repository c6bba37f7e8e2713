"""The training loop every trainer shares: steps, NaN guard, logging, evaluation, checkpoints, Ctrl-C.

A trainer supplies a jitted step, a batch per step (a pure function of the step, so the data position
of a run is its step), an evaluation function and the run directory; `restore_or_init` and `fit` do the
rest the same way for every system.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxmodels_training.metrics import MetricsLog, is_finite, progress
from jaxmodels_training.rundir import RunDir, RunDirError


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


# Errors a training CLI reports as one `error:` line (bad input, a protected run directory, a diverged run).
USER_ERRORS = (RunDirError, TrainingError, ValueError, FileNotFoundError, IsADirectoryError)


@dataclasses.dataclass
class TrainState:
    """params (an nnx.State of Params) and the optax state, donated to every step."""

    params: Any
    opt_state: Any

    def checkpoint(self) -> dict:
        return {"params": nnx.to_pure_dict(self.params), "opt_state": self.opt_state}


def restore_or_init(run: RunDir, params, opt_state, *, resume: bool) -> tuple[TrainState, int]:
    """The latest checkpoint of `run` (with --resume) into the given structures, else them as they are."""
    state = TrainState(params, opt_state)
    if not resume:
        return state, 0
    step, restored, _ = run.restore(state.checkpoint())
    nnx.replace_by_pure_dict(params, restored["params"])
    print(f"resumed {run.out} at step {step}", file=sys.stderr)
    return TrainState(params, restored["opt_state"]), step


@dataclasses.dataclass
class LoopConfig:
    steps: int
    log_every: int
    eval_every: int  # 0: never (otherwise also at the last step)
    save_every: int  # 0: only at the end
    units_per_step: int  # tokens or samples consumed by one step
    unit: str = "tokens"  # the metrics field is f"{unit}_per_s"; "tokens_per_s" is always written
    name: str = "train"


def fit(state: TrainState, start: int, cfg: LoopConfig, *, run: RunDir, log: MetricsLog,
        train_step: Callable, batch: Callable[[int], Any], key: Callable[[int], jax.Array],
        lr: Callable[[int], float], evaluate: Callable[[int, Any], dict[str, float]] | None = None,
        meta: Callable[[int], dict] | None = None) -> tuple[TrainState, dict]:
    """Runs steps start..cfg.steps-1; returns the final state and {"train": [(step, loss)], "eval": [(step, dict)]}.

    `train_step(params, opt_state, batch, key) -> (params, opt_state, metrics with "loss", "grad_norm")`.
    `evaluate(step, params) -> {"loss": ..., ...}` is logged with split "eval". Checkpoints every
    save_every steps, at the end and on Ctrl-C (the step in flight finishes first: its input state is
    donated); a second Ctrl-C aborts. A non-finite loss raises TrainingError naming the last good checkpoint.
    """
    history: dict[str, list] = {"train": [], "eval": []}
    bar = progress(cfg.steps, start, cfg.name)
    t_last, units = time.perf_counter(), 0
    last_saved = start if start else None
    interrupted: list[bool] = []

    def save(step):
        run.save(step, state.checkpoint(), {"step": step, **(meta(step) if meta else {})})

    def on_sigint(*_):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        for step in range(start, cfg.steps):
            state.params, state.opt_state, metrics = train_step(state.params, state.opt_state, batch(step), key(step))
            loss = float(metrics["loss"])
            if not is_finite(loss):
                where = f"step {last_saved} in {run.out / 'checkpoints'}" if last_saved is not None else "none yet"
                raise TrainingError(f"the training loss became {loss} at step {step + 1}; stopped. "
                                    f"Last good checkpoint: {where}. Lower --lr or check the data.")
            done = step + 1
            units += cfg.units_per_step
            history["train"].append((done, loss))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                rate = units / (now - t_last)
                log.write({"step": done, "split": "train", "loss": loss, "lr": float(lr(step)), "tokens_per_s": rate,
                           **({f"{cfg.unit}_per_s": rate} if cfg.unit != "tokens" else {}),
                           "grad_norm": float(metrics["grad_norm"])})
                t_last, units = now, 0
            if evaluate is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                result = evaluate(done, state.params)
                log.write({"step": done, "split": "eval", "lr": float(lr(step)), "tokens_per_s": None, **result})
                history["eval"].append((done, result))
                bar.write(f"step {done}: train loss {loss:.4f}  eval " +
                          "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
            if cfg.save_every and done % cfg.save_every == 0 or interrupted:
                save(done)
                last_saved = done
            if interrupted:
                bar.close()
                print(f"\ninterrupted: saved step {done} to {run.out / 'checkpoints'}; continue with --resume",
                      file=sys.stderr)
                raise SystemExit(130)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    bar.close()
    if run.latest_step() != cfg.steps:
        save(cfg.steps)
    return state, history
