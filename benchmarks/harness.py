"""The benchmark protocol: warm-up, block until ready, several runs, median; JSON + markdown output.

Results go to <results>/<suite>.json (machine-readable, with the exact command and the machine) and
<results>/<suite>.md (a table), written atomically. <results> is where the user runs the benchmarks, not
the installed package: `python -m benchmarks --results DIR`, else $JAXMODELS_BENCH_RESULTS, else
./benchmarks/results (from the repository root: the committed results).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxmodels.io import atomic_open, atomic_write_text
from jaxmodels.tables import markdown_table

RESULTS_ENV = "JAXMODELS_BENCH_RESULTS"
_results_option: Path | None = None  # set by `python -m benchmarks --results DIR`


def set_results_dir(path: str | os.PathLike | None) -> None:
    """Where results go from now on, ahead of the environment (None: back to the environment or default)."""
    global _results_option
    _results_option = None if path is None else Path(path).absolute()


def results_dir() -> Path:
    """--results DIR, else $JAXMODELS_BENCH_RESULTS, else benchmarks/results under the working directory."""
    if _results_option is not None:
        return _results_option
    env = os.environ.get(RESULTS_ENV)
    return Path(env).absolute() if env else Path.cwd() / "benchmarks" / "results"


def block(x: Any) -> Any:
    """Waits for every JAX array in x (torch and numpy results are already synchronous on the CPU)."""
    try:
        import jax

        jax.block_until_ready(x)
    except ImportError:
        pass
    return x


def time_fn(fn: Callable[[], Any], *, warmup: int = 2, runs: int = 7) -> dict[str, float]:
    """Calls fn warmup times, then `runs` timed times; returns seconds {median, min, max, runs}."""
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": runs}


def process_cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle(*, poll: float = 0.005, quiet: float = 0.1, limit: float = 0.25) -> float:
    """Waits until this process's threads stop using the CPU; returns the seconds waited.

    After a call returns, its framework's worker threads keep running for a few ms (PyTorch's OpenMP
    threads spin waiting for the next parallel region, XLA frees buffers asynchronously). Timed back to
    back, that work lands inside the next call, which belongs to the other framework. Quiet means less
    than `quiet` of one core used over a `poll` interval; gives up after `limit` seconds.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        c0, w0 = process_cpu_seconds(), time.perf_counter()
        time.sleep(poll)
        if process_cpu_seconds() - c0 < quiet * (time.perf_counter() - w0):
            break
    return time.perf_counter() - t0


def time_alternating(fns: dict[str, Callable[[], Any]], *, warmup: int = 2, runs: int = 7,
                     settled: bool = True) -> dict[str, dict]:
    """Times several functions interleaved run by run, so machine noise hits them alike.

    With `settled`, each timed call starts once the previous call's leftover thread work is done
    (see `settle`), so no function pays for another's.
    """
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            if settled:
                settle()
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "runs": runs}
            for name, t in times.items()}


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for mod in ("jax", "flax", "torch", "transformers", "numpy", "numba", "faiss"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is simply not reported
            pass
    return info


def write_results(suite: str, results: dict[str, Any], rows: list[dict[str, Any]], *, notes: str = "",
                  columns: list[str] | None = None, chart: Callable[[list, dict], Any] | None = None) -> Path:
    """Writes <suite>.json and <suite>.md into results_dir() and prints the table; returns the JSON path.

    With `chart(rows, results) -> Figure` (benchmarks/charts.py) also <suite>.png, shown in the markdown; it is
    drawn after the JSON is written, so a failing chart never costs the measurements.
    """
    out = results_dir()
    payload = {"suite": suite, "command": shlex.join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "results": results, "rows": rows}
    table = markdown_table(rows, columns) if rows else ""
    md = f"# {suite}\n\n`{payload['command']}` on {payload['time']}\n\n{table}\n"
    if notes:
        md += f"\n{notes}\n"
    if chart is not None:
        md += f"\n![{suite}]({suite}.png)\n"
    atomic_write_text(out / f"{suite}.json", json.dumps(payload, indent=2) + "\n")  # creates `out` when missing
    atomic_write_text(out / f"{suite}.md", md)
    if chart is not None:
        write_chart(chart(rows, results), f"{suite}.png")
    print(table)
    if notes:
        print(notes)
    return out / f"{suite}.json"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed), for a suite's chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_chart(fig, name: str) -> Path:
    """Saves `fig` as <results>/<name> (PNG, written atomically) beside the suite's table and closes it."""
    path = results_dir() / name
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    pyplot().close(fig)
    return path
