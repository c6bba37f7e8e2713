"""`python -m benchmarks htft-summary METRICS.jsonl [...] [--plot PNG] [--json]`: summarise HTFT training runs.

Per metrics file (one JSON object per evaluation, as written by `python -m training.htft`): the best and the
final student eval perplexity, the teacher's truncated perplexity, the unigram baseline, the student/teacher
ratios and the share of the unigram -> teacher gap the student closed (in log perplexity; shown only when
the teacher beats the unigram). --plot writes a PNG of the eval and train perplexity curves (log scale) with the
teacher and unigram levels as horizontal lines (matplotlib, through benchmarks.harness.pyplot).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from jaxmodels_benchmarks import harness

IN_ALL = False  # needs a metrics file

def read_metrics(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"htft-summary: {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SystemExit(f"htft-summary: {path}:{i} is not JSON ({err.msg})") from err
    rows = [r for r in rows if "eval_ppl" in r and "step" in r]
    if not rows:
        raise SystemExit(f"htft-summary: {path} holds no evaluation records (lines with step and eval_ppl)")
    return rows


def summarise(rows: list[dict]) -> dict:
    best = min(rows, key=lambda r: r["eval_ppl"])
    final = rows[-1]
    out = {"evaluations": len(rows), "final_step": final["step"], "best_step": best["step"],
           "best_eval_ppl": best["eval_ppl"], "final_eval_ppl": final["eval_ppl"]}
    teacher, unigram = final.get("teacher_ppl"), final.get("unigram_ppl")
    if teacher:
        out.update(teacher_ppl=teacher, best_ratio=best["eval_ppl"] / teacher, final_ratio=final["eval_ppl"] / teacher)
    if unigram:
        out["unigram_ppl"] = unigram
    if teacher and unigram and unigram > teacher:  # only meaningful when the teacher beats the unigram
        out["gap_closed"] = gap_closed(unigram, best["eval_ppl"], teacher)
    return out


def gap_closed(unigram_ppl: float, student_ppl: float, teacher_ppl: float) -> float:
    """(unigram - student) / (unigram - teacher) in nats per token; NaN when the teacher does not beat the unigram."""
    u, s, t = math.log(unigram_ppl), math.log(student_ppl), math.log(teacher_ppl)
    return (u - s) / (u - t) if u > t else float("nan")


def table(named: list[tuple[str, dict]]) -> str:
    cols = ["evaluations", "final_step", "best_eval_ppl", "best_step", "final_eval_ppl", "teacher_ppl", "best_ratio",
            "final_ratio", "unigram_ppl", "gap_closed"]
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| run | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {name} | " + " | ".join(fmt(s.get(c)) for c in cols) + " |" for name, s in named]
    return "\n".join(lines)


def figure(runs: list[list[dict]], names: list[str] | None = None, title: str = ""):
    """A matplotlib figure of the learning curves: held-out (solid) and pre-update training (dotted) perplexity
    of every run against training windows seen, log scale, with the teacher's and the unigram's levels of the
    first run as dashed lines."""
    plt = harness.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    names = names or [f"run {i + 1}" for i in range(len(runs))]
    colours = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for i, (rows, name) in enumerate(zip(runs, names)):
        c = colours[i % len(colours)]
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["eval_ppl"] for r in rows], "o-", color=c, label=f"{name}: held-out")
        if all("train_ppl" in r for r in rows):
            ax.plot(steps, [r["train_ppl"] for r in rows], ":", color=c, alpha=0.7, label=f"{name}: training")
    last = runs[0][-1]
    for key, label, c in (("teacher_ppl", "teacher (truncated)", "tab:green"), ("unigram_ppl", "unigram", "grey")):
        if last.get(key):
            ax.axhline(last[key], ls="--", color=c, label=f"{label} {last[key]:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training windows seen")
    ax.set_ylabel("perplexity (shortlist + other)")
    ax.set_title(title or "HTFT learning curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot(runs: list[list[dict]], path: Path, names: list[str] | None = None) -> None:
    """figure() written to `path` as PNG."""
    fig = figure(runs, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    harness.pyplot().close(fig)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks htft-summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", nargs="+", help="JSONL metrics files written by training.htft")
    p.add_argument("--plot", nargs="?", const="htft_curves.png", metavar="PNG",
                   help="write the curves to this PNG (default htft_curves.png)")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON instead of a table")
    args = p.parse_args(argv)
    runs = [read_metrics(m) for m in args.metrics]
    named = [(str(m), summarise(rows)) for m, rows in zip(args.metrics, runs)]
    print(json.dumps(dict(named), indent=2) if args.json else table(named))
    if args.plot:
        plot(runs, Path(args.plot), [str(m) for m in args.metrics])
        print(f"wrote {args.plot} (perplexity vs training windows, log scale; teacher and unigram dashed)")
