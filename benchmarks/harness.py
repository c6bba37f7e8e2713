"""The benchmark protocol: warm-up, block until ready, several runs, median; JSON + markdown output.

Results go to benchmarks/results/<suite>.json (machine-readable, with the exact command and the
machine) and benchmarks/results/<suite>.md (a table), written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


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


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(suite: str, results: dict[str, Any], rows: list[dict[str, Any]], *, notes: str = "",
                  columns: list[str] | None = None) -> Path:
    """Writes <suite>.json and <suite>.md and prints the table; returns the JSON path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"suite": suite, "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "results": results, "rows": rows}
    table = markdown_table(rows, columns) if rows else ""
    md = f"# {suite}\n\n`{payload['command']}` on {payload['time']}\n\n{table}\n"
    if notes:
        md += f"\n{notes}\n"
    for name, text in ((f"{suite}.json", json.dumps(payload, indent=2) + "\n"), (f"{suite}.md", md)):
        tmp = RESULTS_DIR / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, RESULTS_DIR / name)
    print(table)
    if notes:
        print(notes)
    return RESULTS_DIR / f"{suite}.json"
