"""`python -m benchmarks <suite> [suite args]` or `python -m benchmarks all`.

Each suite is a module `benchmarks/suites/<name>.py` (dashes in the name become underscores) with a
`main(argv: list[str]) -> None` that measures side by side and writes through `benchmarks.harness`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import jaxmodels_benchmarks.suites as suites


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(suites.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nsuites: " + ", ".join(names + ["all"]))
        return
    suite, rest = argv[0], argv[1:]
    if suite == "all":
        for name in names:
            if getattr(importlib.import_module(f"jaxmodels_benchmarks.suites.{name.replace('-', '_')}"), "IN_ALL", True):
                print(f"== {name}", flush=True)
                importlib.import_module(f"jaxmodels_benchmarks.suites.{name.replace('-', '_')}").main(rest)
        return
    if suite not in names:
        sys.exit(f"unknown benchmark suite {suite!r}; available: {', '.join(names + ['all'])}")
    importlib.import_module(f"jaxmodels_benchmarks.suites.{suite.replace('-', '_')}").main(rest)


if __name__ == "__main__":
    main()
