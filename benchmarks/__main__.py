"""`python -m benchmarks [--results DIR] <suite> [suite args]` or `python -m benchmarks [--results DIR] all`.

Each suite is a module `benchmarks/suites/<name>.py` (dashes in the name become underscores) with a
`main(argv: list[str]) -> None` that measures side by side and writes through `benchmarks.harness`, and
usually a `chart(rows, results)` drawn beside its table (benchmarks/charts.py).
Results go to --results DIR, else $JAXMODELS_BENCH_RESULTS, else ./benchmarks/results.
`python -m benchmarks redraw [NAME...]` draws the charts again from the results JSON (every one by default),
without measuring anything.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys

import jaxmodels_benchmarks.harness as harness
import jaxmodels_benchmarks.suites as suites


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(suites.__path__) if not m.name.startswith("_"))


def _suite(name: str):
    return importlib.import_module(f"jaxmodels_benchmarks.suites.{name.replace('-', '_')}")


def suite_of(name: str, names: list[str]) -> str | None:
    """The suite that wrote results NAME: the longest dash-separated prefix of it that is a suite
    (decode-model -> decode-model, htft-teacher -> htft, qwen-vl-quick -> qwen-vl)."""
    parts = name.split("-")
    return next(("-".join(parts[:n]) for n in range(len(parts), 0, -1) if "-".join(parts[:n]) in names), None)


def redraw(wanted: list[str], names: list[str]) -> None:
    """Writes <NAME>.png again from <NAME>.json for each name (default: every results file whose suite has a chart)."""
    directory = harness.results_dir()
    for name in wanted or sorted(p.stem for p in directory.glob("*.json")):
        path = directory / f"{name}.json"
        suite = suite_of(name, names)
        chart = getattr(_suite(suite), "chart", None) if suite else None
        if not path.is_file() or chart is None:
            if wanted:
                sys.exit(f"error: {path} " + ("does not exist" if not path.is_file() else
                                              f"was written by {suite or 'no suite'}, which draws no chart"))
            continue
        payload = json.loads(path.read_text())
        print(f"wrote {harness.write_chart(chart(payload['rows'], payload['results']), f'{name}.png')}")


def _split_results(argv: list[str]) -> tuple[str | None, list[str]]:
    """A leading `--results DIR` (or `--results=DIR`) taken off argv: (DIR or None, the rest)."""
    if argv and argv[0].startswith("--results="):
        return argv[0].partition("=")[2], argv[1:]
    if argv and argv[0] == "--results":
        return (argv[1] if len(argv) > 1 else ""), argv[2:]
    return None, argv


def main(argv: list[str] | None = None) -> None:
    results, argv = _split_results(sys.argv[1:] if argv is None else list(argv))
    if results is not None:
        if not results or results.startswith("-"):
            sys.exit("--results needs a directory: python -m benchmarks --results DIR <suite> [suite args]")
        harness.set_results_dir(results)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nsuites: " + ", ".join(names + ["all", "redraw"]))
        return
    suite, rest = argv[0], argv[1:]
    if suite == "redraw":
        redraw(rest, names)
        return
    if suite == "all":
        for name in names:
            if getattr(_suite(name), "IN_ALL", True):
                print(f"== {name}", flush=True)
                _suite(name).main(rest)
        return
    if suite not in names:
        sys.exit(f"unknown benchmark suite {suite!r}; available: {', '.join(names + ['all'])}")
    _suite(suite).main(rest)


if __name__ == "__main__":
    main()
