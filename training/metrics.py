"""JSONL metrics (one object per line), their curves drawn beside them on close, and a progress bar that is quiet
when not on a terminal."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jaxmodels.curves import write_run_curves
from jaxmodels.io import atomic_write_text


class MetricsLog:
    """Appends one JSON object per line; on resume, drops lines past the restored step (and a torn last line) first.

    `close()` draws the file's curves beside it (metrics.jsonl -> metrics.png, jaxmodels.curves); trainers
    call it at the end of a run and, from a `finally`, when Ctrl-C or an error stops it.
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            # What follows the last newline is a line a killed run never finished writing: not a record.
            whole = self.path.read_text().split("\n")[:-1]
            kept = [ln for ln in whole if ln and json.loads(ln)["step"] <= resume_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (float(v) if hasattr(v, "dtype") or isinstance(v, float) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean, allow_nan=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Closes the file and writes its curves picture; a second call does nothing."""
        if self._f.closed:
            return
        self._f.close()
        try:
            write_run_curves(self.path)
        except (ImportError, OSError) as e:  # no matplotlib, or no room for the picture: the run itself is fine
            print(f"warning: no curves picture beside {self.path}: {e}", file=sys.stderr)


def progress(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=not sys.stderr.isatty())


def is_finite(x: float) -> bool:
    return math.isfinite(x)
