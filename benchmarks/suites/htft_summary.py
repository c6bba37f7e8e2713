"""`python -m benchmarks htft-summary METRICS.jsonl [...] [--plot PNG] [--json]`: summarise HTFT training runs.

Per metrics file (one JSON object per evaluation, as written by `python -m training.htft`): the best and the
final student eval perplexity, the teacher's truncated perplexity, the unigram baseline, the student/teacher
ratios and the share of the unigram -> teacher gap the student closed (in log perplexity; shown only when
the teacher beats the unigram). --plot writes a PNG
of the eval and train perplexity curves (log scale) with the teacher and unigram levels as horizontal lines,
drawn with NumPy and zlib only (no plotting library is installed here).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

IN_ALL = False  # needs a metrics file

COLOURS = {"eval_ppl": (31, 119, 180), "train_ppl": (255, 127, 14), "teacher_ppl": (44, 160, 44),
           "unigram_ppl": (127, 127, 127)}


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


def _png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    chunk = lambda tag, data: (struct.pack(">I", len(data)) + tag + data  # noqa: E731
                               + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def plot(runs: list[list[dict]], path: Path, width: int = 640, height: int = 400, margin: int = 30) -> None:
    """Curves of every run on one canvas: x = step, y = log perplexity."""
    img = np.full((height, width, 3), 255, np.uint8)
    keys = [k for k in COLOURS if any(k in r for rows in runs for r in rows)]
    vals = [math.log(r[k]) for rows in runs for r in rows for k in keys if r.get(k)]
    steps = [r["step"] for rows in runs for r in rows]
    lo, hi = min(vals), max(vals)
    hi = hi if hi > lo else lo + 1.0
    smax = max(max(steps), 1)
    to_xy = lambda s, v: (margin + (width - 2 * margin) * s / smax,  # noqa: E731
                          height - margin - (height - 2 * margin) * (math.log(v) - lo) / (hi - lo))
    img[height - margin, margin:width - margin] = 0
    img[margin:height - margin, margin] = 0
    for rows in runs:
        for k in keys:
            pts = [to_xy(r["step"], r[k]) for r in rows if r.get(k)]
            if k in ("teacher_ppl", "unigram_ppl") and pts:
                pts = [(margin, pts[-1][1]), (width - margin, pts[-1][1])]
            for (x0, y0), (x1, y1) in zip(pts, pts[1:] or pts):
                t = np.linspace(0, 1, int(max(abs(x1 - x0), abs(y1 - y0))) + 2)
                xs, ys = np.round(x0 + t * (x1 - x0)).astype(int), np.round(y0 + t * (y1 - y0)).astype(int)
                for dy in (-1, 0, 1):
                    img[np.clip(ys + dy, 0, height - 1), np.clip(xs, 0, width - 1)] = COLOURS[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    _png(path, img)


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
        plot(runs, Path(args.plot))
        print(f"wrote {args.plot} (log perplexity vs step; blue eval, orange train, green teacher, grey unigram)")
