"""jaxmodels_benchmarks.harness: a timed call starts only once the previous call's leftover thread work is done;
results go where the user runs the benchmarks (--results, $JAXMODELS_BENCH_RESULTS, ./benchmarks/results)."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
import types

import pytest

import jaxmodels_benchmarks.__main__ as cli
import jaxmodels_benchmarks.harness as harness
from jaxmodels.tables import markdown_table
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


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the repository, no results variable, no --results given yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(harness.RESULTS_ENV, raising=False)
    monkeypatch.setattr(harness, "_results_option", None)  # restored after the test, like any --results
    return tmp_path


def test_results_dir_follows_the_working_directory_then_the_variable_then_the_option(elsewhere, monkeypatch):
    assert harness.results_dir() == elsewhere / "benchmarks" / "results"
    (elsewhere / "sub").mkdir()
    monkeypatch.chdir(elsewhere / "sub")
    assert harness.results_dir() == elsewhere / "sub" / "benchmarks" / "results"
    monkeypatch.setenv(harness.RESULTS_ENV, "from-env")  # relative to the working directory
    assert harness.results_dir() == elsewhere / "sub" / "from-env"
    harness.set_results_dir("from-option")
    monkeypatch.chdir(elsewhere)  # the option was resolved when it was given
    assert harness.results_dir() == elsewhere / "sub" / "from-option"
    harness.set_results_dir(None)
    assert harness.results_dir() == elsewhere / "from-env"


def _fake_suite(monkeypatch) -> None:
    """A suite `fake` that records what it was given through write_results."""
    module = types.ModuleType("jaxmodels_benchmarks.suites.fake")
    module.main = lambda argv: harness.write_results("fake", {"argv": argv}, [{"case": "a", "s": 0.123456}])
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "available", lambda: ["fake"])


@pytest.mark.parametrize("form, quoted", [(["--results", "my results"], "--results 'my results'"),
                                         (["--results=my results"], "'--results=my results'")])
def test_results_option_of_python_m_benchmarks(elsewhere, monkeypatch, capsys, form, quoted):
    _fake_suite(monkeypatch)
    monkeypatch.setenv(harness.RESULTS_ENV, str(elsewhere / "ignored"))
    monkeypatch.setattr(sys, "argv", ["__main__.py", *form, "fake", "--quick"])
    cli.main()
    out = elsewhere / "my results"
    assert sorted(os.listdir(out)) == ["fake.json", "fake.md"] and sorted(os.listdir(elsewhere)) == ["my results"]
    payload = json.loads((out / "fake.json").read_text())
    assert payload["results"] == {"argv": ["--quick"]}
    assert payload["command"].split(" ", 1)[1] == f"-m benchmarks {quoted} fake --quick"  # as a shell would take it
    assert f"`{payload['command']}`" in (out / "fake.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "fake.json").stat().st_mode) == 0o666 & ~umask
    assert "| a | 0.1235 |" in capsys.readouterr().out


def test_results_default_to_benchmarks_results_under_the_working_directory(elsewhere, monkeypatch, capsys):
    _fake_suite(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["__main__.py", "fake"])
    cli.main()
    assert sorted(os.listdir(elsewhere / "benchmarks" / "results")) == ["fake.json", "fake.md"]


@pytest.mark.parametrize("argv", [["--results"], ["--results", "--quick", "fake"], ["--results="]])
def test_results_option_needs_a_directory(elsewhere, argv):
    with pytest.raises(SystemExit, match=r"--results needs a directory: python -m benchmarks --results DIR <suite>"):
        cli.main(argv)
    assert os.listdir(elsewhere) == []


def test_markdown_table_lives_in_jaxmodels_and_is_still_the_harness_one():
    assert harness.markdown_table is markdown_table
    assert markdown_table([{"x": 1.234567, "y": "b"}, {"x": 2}], ["x", "y", "z"]) == (
        "| x | y | z |\n|---|---|---|\n| 1.235 | b |  |\n| 2 |  |  |")


def test_write_chart_saves_a_png_beside_the_tables(elsewhere):
    pytest.importorskip("matplotlib")
    fig, ax = harness.pyplot().subplots()
    ax.bar([0, 1], [3, 4])
    path = harness.write_chart(fig, "suite.png")
    assert path == elsewhere / "benchmarks" / "results" / "suite.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["suite.png"]  # no temporary file left
    assert not harness.pyplot().get_fignums()  # closed
