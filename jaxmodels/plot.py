"""`python -m jaxmodels.plot RUN_DIR... [--out PNG] [--force]`: several training runs' curves in one picture.

Each RUN_DIR is a run directory holding metrics.jsonl (training.hyformer, training.vvalt, training.lm,
training.svf) or a metrics .jsonl file itself (training.htft writes OUTPUT.jsonl). Training loss, evaluation
loss, accuracy, reward and perplexity are drawn where present (jaxmodels.curves), one colour per run. Bad input
is one `error:` line and exit status 2; an existing --out is replaced only with --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxmodels.curves import MetricsFileError, figure, read_metrics, write_png


class PlotError(ValueError):
    """A run or an output path that cannot be used as asked."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxmodels.plot", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run directory with metrics.jsonl, or a .jsonl file")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--title", default="", help="a title above the panels")
    return p.parse_args(argv)


def metrics_file(run: str) -> Path:
    path = Path(run)
    if path.is_dir():
        if not (path / "metrics.jsonl").is_file():
            raise PlotError(f"{run} has no metrics.jsonl (not a training run directory)")
        return path / "metrics.jsonl"
    if not path.exists():
        raise PlotError(f"{run}: no such run directory or metrics file")
    return path


def plot(args: argparse.Namespace) -> Path:
    """Reads every run, draws them and writes --out; returns its path."""
    out = Path(args.out)
    if out.is_dir():
        raise PlotError(f"--out {out} is a directory; name the PNG file to write")
    if out.exists() and not args.force:
        raise PlotError(f"--out {out} exists; pass --force to replace it")
    runs = {run: read_metrics(metrics_file(run)) for run in args.runs}
    fig = figure(runs, title=args.title)
    if fig is None:
        raise PlotError(f"nothing to draw: no loss, accuracy, reward or ppl values in {', '.join(args.runs)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_png(fig, out)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        out = plot(args)
    except (PlotError, MetricsFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
