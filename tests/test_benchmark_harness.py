"""benchmarks.harness: a timed call starts only once the previous call's leftover thread work is done."""

from __future__ import annotations

import threading
import time

from benchmarks.harness import process_cpu_seconds, settle, time_alternating


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_settle_waits_for_a_busy_thread_then_returns():
    worker = threading.Thread(target=_burn, args=(0.15,))
    c0 = process_cpu_seconds()
    worker.start()
    waited = settle(poll=0.02, limit=2.0)  # 20 ms windows: a busy thread is not mistaken for a quiet one
    worker.join()
    assert not worker.is_alive()
    assert waited >= 0.1, f"settle returned after {waited:.3f} s while a thread was still busy"
    assert process_cpu_seconds() - c0 >= 0.02  # the burn was seen as CPU time of this process


def test_settle_gives_up_at_its_limit():
    worker = threading.Thread(target=_burn, args=(1.0,))
    worker.start()
    waited = settle(limit=0.2)
    worker.join()
    assert 0.2 <= waited < 0.8


def test_time_alternating_settles_before_each_timed_call():
    calls = []

    def busy_after_return():
        calls.append(time.perf_counter())
        threading.Thread(target=_burn, args=(0.1,)).start()  # leftover work, as a framework's pool leaves

    timings = time_alternating({"a": busy_after_return, "b": lambda: calls.append(time.perf_counter())},
                               warmup=0, runs=3)
    assert {name: t["runs"] for name, t in timings.items()} == {"a": 3, "b": 3}
    gaps = [calls[i + 1] - calls[i] for i in range(0, len(calls) - 1, 2)]  # from each "a" to the next "b"
    assert min(gaps) >= 0.02, gaps  # back to back (not settled) the gap is microseconds
