"""jaxmodels_benchmarks.harness: a timed call starts only once the previous call's leftover thread work is done."""

from __future__ import annotations

import threading
import time

import jaxmodels_benchmarks.harness as harness
from jaxmodels_benchmarks.harness import process_cpu_seconds, settle, time_alternating


def _burn(cpu_seconds: float) -> None:
    """Uses `cpu_seconds` of this thread's CPU, however long a loaded machine makes that take."""
    start = time.thread_time()
    while time.thread_time() - start < cpu_seconds:
        sum(range(1000))


def test_settle_returns_only_after_a_busy_thread_is_done():
    worker = threading.Thread(target=_burn, args=(0.3,))
    c0 = process_cpu_seconds()
    worker.start()
    # 50 ms windows: a thread that is runnable gets well over 10% of a core in one, even on a loaded machine
    waited = settle(poll=0.05, limit=30.0)
    assert not worker.is_alive(), f"settle returned after {waited:.3f} s while a thread was still busy"
    assert waited >= 0.1
    assert process_cpu_seconds() - c0 >= 0.3  # the thread's CPU is counted as this process's


def test_settle_gives_up_at_its_limit(monkeypatch):
    monkeypatch.setattr(harness, "process_cpu_seconds", time.perf_counter)  # a process busy all the time
    waited = settle(poll=0.005, limit=0.2)
    assert 0.2 <= waited < 0.7


def _events_of_time_alternating(monkeypatch, settled: bool) -> list[str]:
    events = []
    monkeypatch.setattr(harness, "settle", lambda: events.append("settle"))
    time_alternating({"a": lambda: events.append("a"), "b": lambda: events.append("b")},
                     warmup=1, runs=2, settled=settled)
    return events


def test_time_alternating_settles_before_each_timed_call(monkeypatch):
    assert _events_of_time_alternating(monkeypatch, settled=True) == (
        ["a", "b"] + ["settle", "a", "settle", "b"] * 2)  # warmup unsettled, then each timed call settled
    assert _events_of_time_alternating(monkeypatch, settled=False) == ["a", "b"] + ["a", "b"] * 2
