"""The charts beside the benchmark tables: grouped bars and ratios against a reference with the suite's limit drawn.

A suite with a chart defines `chart(rows, results) -> Figure` over exactly the rows and results it gives
`harness.write_results(..., chart=chart)`, which writes <suite>.png beside <suite>.md. Because the chart reads
only what the JSON holds, `python -m benchmarks redraw [NAME...]` draws it again from a results file.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxmodels_benchmarks.harness import pyplot


def figure(panels: int = 1, *, width: float = 6.0, height: float = 4.0, vertical: bool = False):
    """(fig, [axes]) with `panels` axes side by side (or stacked, `vertical`), each width x height inches."""
    plt = pyplot()
    rows, cols = (panels, 1) if vertical else (1, panels)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, list(axes.flat)


def grouped_bars(ax, labels: Sequence[str], series: dict[str, Sequence[float]], *,
                 errors: dict[str, Sequence[float]] | None = None, width: float = 0.8) -> None:
    """One group of bars per label, one bar per series (in the series' order, each its own colour and legend entry)."""
    n = len(series)
    bar = width / n
    for k, (name, values) in enumerate(series.items()):
        offset = (k - (n - 1) / 2) * bar
        ax.bar([i + offset for i in range(len(labels))], values, bar, label=name,
               yerr=(errors or {}).get(name))
    ax.set_xticks(list(range(len(labels))), labels)


def ratio_bars(ax, labels: Sequence[str], values: Sequence[float], *, xlabel: str,
               limits: dict[str, float] | None = None, log: bool = False, better: str = "higher",
               reference: float | None = 1.0, unit: str = "x") -> None:
    """Horizontal bars, the first label on top as in the table, each value written at its bar's end: ratios
    against a reference drawn at `reference` (None: no reference line), each limit of `limits` a dashed red line.
    Bars on the good side (`better`: "higher" or "lower") of the reference, else of the first limit, are blue,
    the others orange."""
    y = list(range(len(labels)))[::-1]
    ref = reference if reference is not None else next(iter((limits or {}).values()), None)
    good = [ref is None or ((v >= ref) if better == "higher" else (v <= ref)) for v in values]
    ax.barh(y, values, 0.7, color=["tab:blue" if g else "tab:orange" for g in good])
    if reference is not None:
        ax.axvline(reference, color="k", linewidth=1)
    for (name, value), style in zip((limits or {}).items(), ("--", ":", "-.")):
        ax.axvline(value, color="tab:red", linestyle=style, linewidth=1.2, label=name)
    for yi, v in zip(y, values):
        ax.annotate(f"{v:.3g}{unit}", (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    if limits:
        ax.legend(fontsize=7, loc="lower right")
    low, high = ax.get_xlim()
    ax.set_xlim(low, high * 1.8 if log else high * 1.12)  # room for the values at the bars' ends


def ratio_figure(labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
                 limits: dict[str, float] | None = None, log: bool = False, better: str = "higher"):
    """A one-panel figure of ratio_bars, tall enough for every label."""
    fig, (ax,) = figure(width=8, height=0.26 * len(labels) + 1.4)
    ratio_bars(ax, labels, values, xlabel=xlabel, limits=limits, log=log, better=better)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
