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
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxmodels_training.metrics import MetricsLog
from jaxmodels_training.rundir import RunDir

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed.initialize itself
ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


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
    """Calls jax.distributed.initialize when asked (flags, environment, or --distributed); else nothing."""
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
    try:
        jax.distributed.initialize(coordinator, n, i, initialization_timeout=args.distributed_timeout)
    except Exception as e:  # noqa: BLE001 - XLA reports a failed rendezvous as a bare runtime error
        raise DistributedError(f"process {i} of {n}: could not join the coordinator {coordinator} within "
                               f"{args.distributed_timeout} s ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                               f"check that all {n} processes run with the same --num-processes and "
                               f"--coordinator") from None


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
    orbax manager (the same options as RunDir's), whose collective saves and restores need every process.
    Its construction meets process 0's in orbax's directory barrier, which process 0 reaches only after
    RunDir has checked and (re)written the directory."""

    def __init__(self, out, keep: int = 3):  # noqa: D107 - RunDir.__init__ is skipped on purpose
        self.out = Path(out)
        self.manager = ocp.CheckpointManager(
            (self.out / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False))


def run_dir(out, identity: dict, *, resume: bool, force: bool) -> RunDir:
    if not is_multiprocess() or is_primary():
        return RunDir(out, identity, resume=resume, force=force)
    return _FollowerRunDir(out)


def gather(tree):
    """`tree` with every array whole on this host (numpy): sharded arrays gathered from all processes.
    One process: returned as it is (its arrays are addressable already)."""
    if not is_multiprocess():
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
