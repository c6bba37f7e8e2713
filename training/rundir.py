"""A training run's directory: run.json (what the run is), orbax checkpoints, metrics, the final model.

The directory is never silently reused: another run there needs --resume (same identity) or --force. It is never
one of the run's inputs, a parent of one or inside one (jaxmodels.paths), and --force never deletes through a
symbolic link.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxmodels.io import atomic_write_text, read_json_object
from jaxmodels.paths import OverlapError, check_destination


def checkpoint_manager(out: Path, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of `out/checkpoints` (synchronous saves, the last `keep` kept). A save killed midway
    leaves only `<step>.orbax-checkpoint-tmp*`, never read as a checkpoint; the next start deletes it (a step
    that is saved again would replace it anyway, but an interrupt's odd step never is)."""
    return ocp.CheckpointManager(
        (out / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True))


class RunDirError(ValueError):
    """The output directory cannot be used as asked (it holds another run, or none to resume)."""


def identity_changes(saved: dict[str, Any], now: dict[str, Any], *, was: str = "run has") -> str:
    """'' when `now` equals `saved` on every key of `now`, else '<key>: <was> <old>, now <new>; ...' (sorted)."""
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    return "; ".join(f"{k}: {was} {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))


def _recorded_paths(identity: dict[str, Any]) -> list[str]:
    """The absolute paths a run's identity records: the inputs trainers resolve for resuming (e.g. --model)."""
    return [v for v in identity.values() if isinstance(v, str) and os.path.isabs(v)]


class RunDir:
    """`out/run.json`, `out/checkpoints/<step>/` (orbax: state + JSON meta), `out/metrics.jsonl`, `out/model/`.

    `sources`: the run's input files and directories (with the absolute paths `identity` records, they may not
    overlap `out`)."""

    def __init__(self, out: str | Path, identity: dict[str, Any], *, resume: bool, force: bool, keep: int = 3,
                 sources: Iterable[str | os.PathLike | None] = ()):
        self.out = Path(out)
        run_json = self.out / "run.json"
        if force and resume:
            raise RunDirError("--force and --resume contradict each other: --force starts over, --resume continues")
        try:
            check_destination(self.out, [*sources, *_recorded_paths(identity)], what="--out")
        except OverlapError as e:
            raise RunDirError(str(e)) from None
        if os.path.lexists(self.out) and not self.out.is_dir():
            raise RunDirError(f"--out {self.out} is a file, not a directory; choose another --out")
        if run_json.is_file() and force:
            self._clear()
        elif run_json.is_file():
            try:
                previous = read_json_object(run_json)
            except ValueError as e:  # read_json_object's own: not JSON, or not an object
                raise RunDirError(f"{e}; --force deletes the directory and starts over") from None
            if not resume:
                raise RunDirError(f"{self.out} holds another run ({previous.get('identity', {})}); pass --resume to "
                                  f"continue it, --force to delete it and start over, or choose another --out")
            elif not isinstance(previous.get("identity"), dict):
                raise RunDirError(f"--resume: {run_json} has no 'identity' object (not written by a jaxmodels "
                                  f"trainer, or damaged), so the run cannot be checked; --force starts over")
            else:
                details = identity_changes(previous["identity"], identity)
                if details:
                    raise RunDirError(f"--resume: {self.out} holds a run with another configuration ({details})")
        elif resume:
            raise RunDirError(f"--resume: {self.out} holds no run to resume (no run.json)")
        elif self.out.exists() and any(self.out.iterdir()):
            if not force:
                raise RunDirError(f"{self.out} exists, is not empty and is not a run directory; choose another --out "
                                  f"or pass --force to replace it")
            self._clear()
        created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_json, json.dumps({"identity": identity}, indent=2, sort_keys=True) + "\n")
        except OSError as e:  # read-only, or full: a directory made here goes again
            if created:
                shutil.rmtree(self.out, ignore_errors=True)
            raise RunDirError(f"--out {self.out}: cannot write there ({e.strerror or e})") from None
        self.manager = checkpoint_manager(self.out, keep)

    def _clear(self) -> None:
        """--force: deletes the directory, never what a symbolic link points to."""
        if self.out.is_symlink():
            raise RunDirError(f"--out {self.out} is a symbolic link (to {os.readlink(self.out)}); --force does not "
                              f"delete through links: pass the directory itself, or remove the link")
        shutil.rmtree(self.out)

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def resuming(self, resume: bool) -> bool:
        """Whether there is a checkpoint to resume from: --resume of a run stopped before its first checkpoint
        starts again from step 0 (the same identity, so the same losses as an uninterrupted run)."""
        if resume and self.latest_step() is None:
            print(f"--resume: {self.out} has no checkpoint yet (stopped before its first one): starting from step 0",
                  file=sys.stderr)
            return False
        return resume

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves the pytree `state` (e.g. params and optimizer state) and JSON `meta` as checkpoint `step`."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, like: Any) -> tuple[int, Any, dict[str, Any]]:
        """Restores the latest checkpoint into the structure, dtypes and shardings of `like`."""
        step = self.latest_step()
        if step is None:
            raise RunDirError(f"--resume: {self.out} has no checkpoint yet")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                      meta=ocp.args.JsonRestore()))
        return step, restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()
