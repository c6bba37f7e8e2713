"""`python -m benchmarks [--results DIR] <suite> [suite args]` or `python -m benchmarks [--results DIR] all`.

Each suite is a module `benchmarks/suites/<name>.py` (dashes in the name become underscores) with a
`main(argv: list[str]) -> None` that measures side by side and writes through `benchmarks.harness`.
Results go to --results DIR, else $JAXMODELS_BENCH_RESULTS, else ./benchmarks/results.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import jaxmodels_benchmarks.harness as harness
import jaxmodels_benchmarks.suites as suites


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(suites.__path__) if not m.name.startswith("_"))


def _suite(name: str):
    return importlib.import_module(f"jaxmodels_benchmarks.suites.{name.replace('-', '_')}")


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
        print(__doc__.strip() + "\n\nsuites: " + ", ".join(names + ["all"]))
        return
    suite, rest = argv[0], argv[1:]
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
