"""Several processes for `training.lm`: `jax.distributed.initialize`, the run directory, logs and final files.

Every process runs the same program on its own devices; the mesh spans all of them (jax.devices()). Each
process tokenizes the data the same way and places only the rows its devices hold (lm_step.BatchPlacer).
Process 0 validates and prepares the run directory (RunDir: --resume / --force, run.json), writes the metrics
and the final files; orbax checkpoints are written and restored by all processes together, each its own
shards, so a checkpoint restores onto another mesh or process count.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxmodels import sharding
from jaxmodels_training.metrics import MetricsLog
from jaxmodels_training.rundir import RunDir, RunDirError, checkpoint_manager

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # jax.distributed.initialize's own
ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"  # ours, for launchers that set variables


class DistributedError(ValueError):
    """Processes that cannot form (or lost) their group: reported as one error line."""


def add_args(group) -> None:
    group.add_argument("--coordinator", metavar="HOST:PORT", help=f"process 0's address: run several processes "
                       f"(one per host; default ${ENV_COORDINATOR})")
    group.add_argument("--num-processes", type=int, metavar="N", help=f"how many processes (default "
                       f"${ENV_NUM_PROCESSES}, or the cluster's: TPU pods, SLURM, Open MPI)")
    group.add_argument("--process-id", type=int, metavar="I", help=f"this process, 0..N-1 (default ${ENV_PROCESS_ID})")
    group.add_argument("--distributed", action="store_true", help="join a cluster JAX detects by itself (Cloud TPU "
                       "pods, SLURM, Open MPI, Kubernetes) without --coordinator")
    group.add_argument("--distributed-timeout", type=int, default=300, metavar="S",
                       help="seconds to wait for every process to join (default 300)")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise DistributedError(f"${name}={value!r}: expected a non-negative integer")
    return int(value)


def initialize(args: argparse.Namespace) -> None:
    """Calls jax.distributed.initialize when asked (flags, environment, or --distributed); else nothing.

    Processes that never all join (fewer started than --num-processes, a wrong address) would make XLA abort
    this process at the deadline; a watchdog reports it as one error line first (exit status 2).
    """
    coordinator = args.coordinator or os.environ.get(ENV_COORDINATOR)
    n = args.num_processes if args.num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    i = args.process_id if args.process_id is not None else _env_int(ENV_PROCESS_ID)
    if coordinator is None and not args.distributed:
        if n not in (None, 1) or i not in (None, 0):
            raise DistributedError("--num-processes / --process-id need --coordinator HOST:PORT (process 0's "
                                   "address) or --distributed")
        return
    if coordinator is not None and (n is None or i is None):
        raise DistributedError(f"--coordinator {coordinator} needs --num-processes and --process-id (or "
                               f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID})")
    if n is not None and i is not None and not 0 <= i < n:
        raise DistributedError(f"--process-id {i} is outside 0..{n - 1} (--num-processes {n})")
    timeout = args.distributed_timeout
    watchdog = threading.Timer(timeout, _fail, [f"process {i} of {n}: not all {n} processes joined the coordinator "
                                                f"{coordinator} within {timeout} s; start all of them with the same "
                                                f"--coordinator and --num-processes (--distributed-timeout S waits "
                                                f"longer)"])
    watchdog.daemon = True
    watchdog.start()
    try:  # XLA's own deadline comes later than the watchdog's, which then reports instead of XLA's abort
        jax.distributed.initialize(coordinator, n, i, initialization_timeout=timeout + 30)
    except Exception as e:  # noqa: BLE001 - the rendezvous reports its failures as bare runtime errors
        raise DistributedError(f"process {i} of {n}: could not join the coordinator {coordinator} "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    finally:
        watchdog.cancel()
    global _joined
    _joined = True


_joined = False  # jax.distributed.initialize has succeeded in this process


def _fail(message: str) -> None:
    """Ends this process at once with one error line (exit status 2), from any thread, skipping the atexit
    handlers: jax.distributed's would wait for processes that will not come."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def exit_with_error(message: str) -> None:
    """The CLI's exit on a user error: one line, status 2; with several processes without the atexit wait."""
    if _joined:
        _fail(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _client():
    # jax.distributed has no public handle on its key-value store; orbax reaches it the same way.
    return jax._src.distributed.global_state.client


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_primary() -> bool:
    return jax.process_index() == 0


def report(message: str) -> None:
    if is_primary():
        print(message, file=sys.stderr)


def barrier(name: str) -> None:
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class _NullLog:
    def write(self, record) -> None:
        pass

    def close(self) -> None:
        pass


def metrics_log(path, *, resume_step: int | None):
    """The metrics file on process 0; the other processes log nothing."""
    return MetricsLog(path, resume_step=resume_step) if is_primary() else _NullLog()


class _FollowerRunDir(RunDir):
    """The run directory seen from a process other than 0, which process 0 validates and prepares: only the
    orbax manager (RunDir's), whose collective saves and restores need every process.
    Its construction meets process 0's in orbax's directory barrier, which process 0 reaches only after
    RunDir has checked and (re)written the directory."""

    def __init__(self, out, keep: int = 3):  # noqa: D107 - RunDir.__init__ is skipped on purpose
        self.out = Path(out)
        self.manager = checkpoint_manager(self.out, keep)


_RUN_DIR_ERROR = "jaxmodels_training.lm/run_dir_error"


def run_dir(out, identity: dict, *, resume: bool, force: bool, sources=()) -> RunDir:
    """The run directory: a RunDir on process 0 (which checks and prepares it), the orbax manager alone on
    the others. A refusal on process 0 (e.g. --resume with another model) is raised there before orbax's
    directory barrier, which the other processes are waiting in: process 0 posts it in the coordinator's
    key-value store, and they report it as their own error line."""
    if not is_multiprocess():
        return RunDir(out, identity, resume=resume, force=force, sources=sources)
    client = _client()
    if is_primary():
        try:
            return RunDir(out, identity, resume=resume, force=force, sources=sources)
        except RunDirError as e:
            client.key_value_set(_RUN_DIR_ERROR, str(e))
            for j in range(1, jax.process_count()):  # keep the coordinator up until every process has read it
                client.blocking_key_value_get(f"{_RUN_DIR_ERROR}/read/{j}", 60_000)
            raise
    stop = threading.Event()

    def watch():
        while not stop.wait(0.2):
            try:
                message = client.key_value_try_get(_RUN_DIR_ERROR)
            except jax.errors.JaxRuntimeError:  # not posted
                continue
            client.key_value_set(f"{_RUN_DIR_ERROR}/read/{jax.process_index()}", "1")
            _fail(" ".join(message.split()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return _FollowerRunDir(out)
    finally:
        stop.set()


def gather(tree):
    """`tree` with every array whole on this host (numpy), gathered from all processes in one program.
    One process: returned as it is (its arrays are addressable already)."""
    if not is_multiprocess():
        return tree
    mesh = sharding.mesh_of(tree)
    if mesh is not None:
        tree = jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, P()))(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
