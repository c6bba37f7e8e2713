"""Argument groups every training CLI shares (optimisation and run directory), with per-trainer defaults, and
their exit on a user error."""

from __future__ import annotations

import argparse
import sys


class ErrorExit(SystemExit):
    """A CLI's end on a user error: exit status 2 (as argparse's), and str() is the `error:` line, so that an
    in-process caller (a test, a notebook) sees what the user saw."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")
        self.code = 2

    def __str__(self) -> str:
        return self.args[0]


def exit_with_error(err: BaseException | str) -> None:
    """Prints one `error: ...` line (the message on one line) to stderr and exits with status 2."""
    message = " ".join(str(err).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise ErrorExit(message)


def add_optimisation_args(p: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float, warmup_steps: int,
                          weight_decay: float, seed_help: str | None = None) -> argparse._ArgumentGroup:
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=steps)
    o.add_argument("--batch-size", type=int, default=batch_size)
    o.add_argument("--lr", type=float, default=lr)
    o.add_argument("--warmup-steps", type=int, default=warmup_steps)
    o.add_argument("--min-lr-ratio", type=float, default=0.1)
    o.add_argument("--weight-decay", type=float, default=weight_decay)
    o.add_argument("--grad-clip", type=float, default=1.0)
    o.add_argument("--seed", type=int, default=0, help=seed_help)
    return o


def add_run_dir_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--out, --resume, --force: the flags of a training.rundir.RunDir, for CLIs without the full run group."""
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="delete whatever --out holds and start over")


def add_run_args(p: argparse.ArgumentParser, *, demo_help: str) -> argparse._ArgumentGroup:
    r = p.add_argument_group("run")
    add_run_dir_args(r)
    r.add_argument("--eval-every", type=int, default=200)
    r.add_argument("--save-every", type=int, default=500)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--metrics-path", help="JSONL metrics file (default: OUT/metrics.jsonl)")
    r.add_argument("--demo", action="store_true", help=demo_help)
    return r
