"""Training curves from metrics.jsonl files: reading them, one figure overlaying runs, the PNG written atomically.

A metrics file holds one JSON object per line with an integer `step`. A record names its split (`"split":
"train"`, `"eval"` or `"valid"`) and carries metrics such as `loss`, or, without a split, prefixes them
(`train_loss`, `eval_ppl`, as training.htft writes). Every metric of PANELS found gets a panel, every
(run, split) a line. matplotlib (file-only Agg backend) is imported only when a figure is drawn, so importing
this module costs nothing.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

from jaxmodels.io import atomic_open

PANELS = {"loss": "linear", "accuracy": "linear", "reward": "linear", "ppl": "log"}  # metric -> y scale
SPLITS = ("train", "eval", "valid")
_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


class MetricsFileError(ValueError):
    """A metrics file that cannot be read as one JSON object with an integer step per line."""


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file; a malformed line raises MetricsFileError naming file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsFileError(f"{path} line {number}: not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise MetricsFileError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise MetricsFileError(f"{path} line {number}: expected an integer 'step', got {step!r}")
        records.append(record)
    return records


def _points(record: dict):
    """(split, metric, value) for every plotted metric of one record."""
    split = record.get("split")
    for key, value in record.items():
        if split is None:
            prefix, _, metric = key.partition("_")
            point_split = prefix if prefix in SPLITS else "train"
            metric = metric if prefix in SPLITS else key
        else:
            point_split, metric = str(split), key
        if metric in PANELS and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            yield point_split, metric, float(value)


def series(records: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{metric: {split: (steps, values)}} over the records, in file order."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for record in records:
        for split, metric, value in _points(record):
            steps, values = out.setdefault(metric, {}).setdefault(split, ([], []))
            steps.append(record["step"])
            values.append(value)
    return out


def figure(runs: dict[str, list[dict]], title: str = ""):
    """A matplotlib figure: one panel per metric of PANELS present, each run in its colour, training as a line
    and evaluation splits as dashed lines with markers. None when no record has a plotted metric."""
    curves = {name: series(records) for name, records in runs.items()}
    metrics = [m for m in PANELS if any(m in c for c in curves.values())]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (name, by_metric) in enumerate(curves.items()):
            for split, (steps, values) in by_metric.get(metric, {}).items():
                style = "-" if split == "train" else "o--"
                label = split if len(curves) == 1 else f"{name}: {split}"
                ax.plot(steps, values, style, color=_COLOURS[i % len(_COLOURS)], markersize=3,
                        linewidth=1.2 if split == "train" else 1.0, alpha=0.85 if split == "train" else 1.0,
                        label=label)
        ax.set_yscale(PANELS[metric])
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:  # wrapped to the figure's width (about 13 characters per inch at this size)
        fig.suptitle(textwrap.fill(title, 13 * 5 * len(metrics)), fontsize=9)
    fig.tight_layout()
    return fig


def write_png(fig, path: str | Path) -> Path:
    """Saves `fig` to `path` as PNG (atomically: a temporary sibling renamed over it) and closes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def write_run_curves(metrics_path: str | Path) -> Path | None:
    """Draws one run's metrics file as <its name>.png beside it (metrics.jsonl -> metrics.png); returns the PNG's
    path, or None when the file holds nothing to draw yet."""
    metrics_path = Path(metrics_path)
    fig = figure({metrics_path.parent.name: read_metrics(metrics_path)}, title=str(metrics_path))
    return None if fig is None else write_png(fig, metrics_path.with_suffix(".png"))
