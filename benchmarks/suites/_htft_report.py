"""The HTFT benchmark's report: the table rows, the notes, the learning-curve chart and the JSON record, from the
per-seed runs, the analytic FLOP counts and the side-by-side timings that `benchmarks/suites/htft.py` measured."""

from __future__ import annotations

import math
import statistics

from jaxmodels_benchmarks.harness import markdown_table, write_chart, write_results
from jaxmodels_benchmarks.suites import htft_summary


def gap_closed(record: dict) -> float:
    """htft_summary.gap_closed of an evaluation record (its eval_ppl as the student's)."""
    return htft_summary.gap_closed(record["unigram_ppl"], record["eval_ppl"], record["teacher_ppl"])


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return f"{mean:.4g} +- {sd:.2g} (min {min(values):.4g}, max {max(values):.4g})"


def rows_for(runs: dict, t_flops: dict, s_flops: dict, t_ms: float, s_ms: float, teacher_full_nll: float) -> list:
    """One row per model: the unigram, each seed's student, their mean, the truncated and the full teacher, and
    the student end to end (teacher hidden states + student)."""
    finals = {seed: r["metrics"][-1] for seed, r in runs.items()}
    last = next(iter(finals.values()))
    u, t = math.log(last["unigram_ppl"]), math.log(last["teacher_ppl"])
    rows = [{"model": "unigram (add-one, training stream)", "held-out ppl": last["unigram_ppl"], "nats/token": u,
             "gap closed": 0.0, "FLOPs/token": 0, "ms/token": ""}]
    for seed, rec in finals.items():
        rows.append({"model": f"student (HTFT, seed {seed}), own compute", "held-out ppl": rec["eval_ppl"],
                     "nats/token": math.log(rec["eval_ppl"]), "gap closed": gap_closed(rec),
                     "FLOPs/token": s_flops["total"], "ms/token": s_ms})
    nats = [math.log(r["eval_ppl"]) for r in finals.values()]
    mean_nats = statistics.mean(nats)
    mean_gap = (u - mean_nats) / (u - t)
    rows.append({"model": f"student, mean over {len(finals)} seeds", "held-out ppl": math.exp(mean_nats),
                 "nats/token": mean_nats, "gap closed": mean_gap, "FLOPs/token": s_flops["total"], "ms/token": s_ms})
    rows.append({"model": "teacher, truncated (shortlist + other)", "held-out ppl": last["teacher_ppl"],
                 "nats/token": t, "gap closed": 1.0, "FLOPs/token": t_flops["total"], "ms/token": t_ms})
    rows.append({"model": "teacher, full vocabulary (all its tokens: not on the compact classes)",
                 "held-out ppl": math.exp(teacher_full_nll), "nats/token": teacher_full_nll, "gap closed": "",
                 "FLOPs/token": t_flops["total"], "ms/token": t_ms})
    rows.append({"model": "student end to end (teacher hidden states + student)", "held-out ppl": math.exp(mean_nats),
                 "nats/token": mean_nats, "gap closed": mean_gap, "FLOPs/token": t_flops["total"] + s_flops["total"],
                 "ms/token": t_ms + s_ms})
    return rows


def chart(name: str, runs: dict, title: str):
    """The learning curves of every seed (held-out and training perplexity against windows seen) as <name>.png."""
    fig = htft_summary.figure([r["metrics"] for r in runs.values()], [f"seed {s}" for s in runs], title)
    return write_chart(fig, f"{name}.png")


def report(name: str, *, runs: dict, corpus: dict, teacher: dict, t_flops: dict, s_flops: dict, secs: dict,
           batch: int, window: int, teacher_full_nll: float, classes: int, settings: list[str], extra_notes: list[str],
           ckpt_meta: dict) -> None:
    """Writes <name>.{json,md,png} through the harness."""
    seed = next(iter(runs))
    t_ms, s_ms = 1e3 * secs["teacher"] / (batch * window), 1e3 * secs["student"] / batch
    rows = rows_for(runs, t_flops, s_flops, t_ms, s_ms, teacher_full_nll)
    finals = {s: r["metrics"][-1] for s, r in runs.items()}
    last = finals[seed]
    gaps = [gap_closed(r) for r in finals.values()]
    mean_gap = rows[len(finals) + 1]["gap closed"]
    seeds = [{"seed": s, "eval_ppl": r["eval_ppl"], "gap closed": gap_closed(r), "best eval_ppl":
              min(x["eval_ppl"] for x in runs[s]["metrics"]), "train s": runs[s]["seconds"],
              "capture": runs[s]["capture"]} for s, r in finals.items()]
    head = t_flops["lm_head"]
    body = t_flops["total"] - head
    png = chart(name, runs, f"HTFT student of {teacher['name']}: {corpus['name']}")
    results = {"teacher": {**teacher, "flops": t_flops, "seconds_per_batch": secs["teacher"], "ms_per_token": t_ms},
               "student": {"flops": s_flops, "seconds_per_batch": {k: v for k, v in secs.items() if k != "teacher"},
                           "ms_per_token": s_ms, "settings": settings, **ckpt_meta},
               "corpus": corpus, "seeds": seeds, "gap_closed_mean": mean_gap, "gap_closed_per_seed": gaps,
               "timing_batch": batch, "window": window, "classes": classes, "chart": png.name,
               "metrics": {str(s): r["metrics"] for s, r in runs.items()}}
    head_ms = 1e3 * secs["teacher_head"] / batch
    student_nats = statistics.mean(math.log(r["eval_ppl"]) for r in finals.values())
    windows = f"{corpus['train_windows']:,} windows of {window} tokens" if "train_windows" in corpus else \
        f"windows of {window} tokens"
    passes = corpus.get("epochs", 1)
    notes = [
        f"Corpus: {corpus['source']}; {corpus['train_tokens']:,} training tokens, {corpus['eval_tokens']:,} held-out "
        f"tokens ({corpus['split']}). The student trained on {windows} in {passes} online "
        f"pass{'es' if passes > 1 else ''} ({last['step']:,} windows seen); evaluation on {corpus['eval_windows']:,} "
        f"held-out windows. Perplexities are over the compact vocabulary ({classes:,} classes: the shortlist of the "
        f"teacher's {teacher['vocab_size']:,} tokens most frequent in the training stream, plus other); 'gap closed' "
        f"= (unigram - student) / (unigram - teacher) in nats per token.",
        f"Over {len(finals)} seeds the student closes {mean_gap:.1%} of the gap (mean of the nats; per seed "
        f"{', '.join(f'{g:.1%}' for g in gaps)}; eval ppl {_spread([r['eval_ppl'] for r in finals.values()])}).",
        f"FLOPs per predicted token: teacher = 2 x {t_flops['matmul_params']:,} matmul parameters + attention over "
        f"{window} tokens ({t_flops['attention']:,}), as one new token with a KV cache; of that its LM head over the "
        f"whole vocabulary is {head:,} ({head / t_flops['total']:.0%}). Student = its two projections and fields "
        f"({s_flops}).",
        f"Wall time per predicted token, median of 5 alternating runs on the same {batch} held-out windows: teacher "
        f"= one forward over the windows (hidden states of all {batch} x {window} positions) / ({batch} x {window}); "
        f"its LM head alone on the {batch} last hidden states: {head_ms:.3f} ms per token; student = (context build "
        f"+ prediction) for the {batch} windows / {batch}: {1e3 * secs['student_build'] / batch:.3f} + "
        f"{1e3 * secs['student_predict'] / batch:.3f} ms. Without a KV cache the teacher needs a whole window per "
        f"prediction: {1e3 * secs['teacher'] / batch:.2f} ms.",
        f"Where the student does not pay for itself: it reads the teacher's final hidden states of the whole window, "
        f"so end to end it costs the teacher plus itself ({t_flops['total'] + s_flops['total']:,} FLOPs, "
        f"{t_ms + s_ms:.3f} ms per token) and predicts worse than the teacher ({math.exp(student_nats):.3g} against "
        f"{last['teacher_ppl']:.3g} truncated perplexity). All it can replace is the teacher's LM head: body "
        f"({body:,} FLOPs) + student ({s_flops['total']:,}) is {(body + s_flops['total']) / t_flops['total']:.0%} of "
        f"the teacher's FLOPs, and {s_ms:.3f} ms against the head's {head_ms:.3f} ms per token in wall time, for "
        f"{math.exp(student_nats) / last['teacher_ppl']:.2f}x the teacher's truncated perplexity. (The truncated "
        f"teacher needs the whole head too: 'other' is one minus the shortlist's share of the full softmax.)",
        *extra_notes,
        "Student seeds (same teacher windows, same settings):\n\n" + markdown_table(seeds),
        f"Evaluations of seed {seed} (the learning curve of every seed: {png.name}):\n\n" + markdown_table(
            [{k: r[k] for k in ("step", "train_ppl", "eval_ppl", "teacher_ppl", "unigram_ppl", "samples_per_s")}
             for r in runs[seed]["metrics"]])]
    write_results(name, results, rows, notes="\n\n".join(notes))
