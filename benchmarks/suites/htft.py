"""The HTFT end to end on real text: `python -m benchmarks htft [--teacher DIR] [--work DIR] [-- HTFT flags]`.

1. Teacher: --teacher DIR (a Hugging Face causal LM directory or one of ours), or trained here when absent: a
   byte-level Hyformer (`python -m training.hyformer`, the Python standard library's sources) exported with
   `jaxmodels-convert to-hf` into WORK/teacher_hf (reused when present).
2. Held-out text: the teacher trainer's own held-out documents (every 20th stdlib source file, as
   training.data.TokenStream splits them) in WORK/heldout.txt. The student trains on its first --train-tokens and
   is evaluated on the next --eval-tokens: text neither model trained on.
3. `python -m training.htft` (in process) with the student settings STUDENT (flags after `--` override them).
4. Compute per predicted token: analytic FLOPs, and wall time measured side by side (alternating runs) on the
   same held-out windows: the teacher's forward over the windows, the student's context build + prediction.
Results: benchmarks/results/htft.{json,md} (--quick: a smoke run into htft-quick.*, not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxmodels_benchmarks.harness import markdown_table, time_alternating, write_results
from jaxmodels_benchmarks.suites import htft_summary
from jaxmodels.io import atomic_write_text

IN_ALL = False  # trains a teacher (about 15 min on 2 shared cores) unless --teacher is given

TEACHER_ARGS = ["--preset", "small", "--batch-size", "16", "--seq-len", "128", "--lr", "3e-3"]
TEACHER_STEPS = {"full": ["--steps", "600", "--warmup-steps", "60", "--eval-every", "200", "--save-every", "200"],
                 "quick": ["--steps", "20", "--warmup-steps", "5", "--eval-every", "10", "--save-every", "20"]}
# The student's settings, chosen with a few dozen runs on this teacher (docs/htft.md "Results"): windows of 32
# bytes with stride 12 over 400k training bytes; Stage 2 reads the Stage 1 embedding (8 wide) and the last hidden
# state only (--tail-tokens 1), with few neighbours (32) and a large step (eta 45); small fields, so the student's
# own compute stays well under the teacher's.
STUDENT = ["--train-tokens", "400000", "--eval-tokens", "50000", "--seq-len", "32", "--stride", "12",
           "--max-train-examples", "33000", "--max-eval-examples", "4096", "--stage1-tensors", "128",
           "--stage1-countsketch-dim", "8192", "--stage1-srht-dim", "256", "--stage1-target-dim", "8",
           "--stage2-tensors", "2048", "--stage2-countsketch-dim", "0", "--stage2-srht-dim", "256", "--tail-tokens",
           "1", "--hashed-dim", "4096", "--vocab-limit", "4096", "--top-k", "32", "--train-top-k", "32",
           "--stage2-tau", "2", "--stage2-eta", "45", "--stage2-eta-g", "4.5", "--eval-every", "8250"]
QUICK = ["--train-tokens", "6000", "--eval-tokens", "2000", "--seq-len", "16", "--stride", "8",
         "--max-train-examples", "256", "--max-eval-examples", "64", "--stage1-tensors", "64", "--stage2-tensors",
         "64", "--stage1-countsketch-dim", "1024", "--stage1-srht-dim", "128", "--stage2-countsketch-dim", "0",
         "--stage2-srht-dim", "128", "--stage1-target-dim", "8", "--tail-tokens", "1", "--hashed-dim", "256",
         "--top-k", "16", "--train-top-k", "16", "--stage2-tau", "2", "--stage2-eta", "45", "--stage2-eta-g", "4.5",
         "--eval-every", "128"]


def _run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def train_teacher(work: Path, steps: list[str]) -> tuple[Path, dict]:
    """A byte-level Hyformer trained here and exported to Hugging Face; reused (with its recorded timings) when
    WORK/teacher_hf exists."""
    run, hf, record = work / "teacher", work / "teacher_hf", work / "teacher_info.json"
    train = ["python", "-m", "jaxmodels_training.hyformer", *TEACHER_ARGS, *steps, "--out", str(run)]
    export = ["jaxmodels-convert", "to-hf", str(run), str(hf)]
    if hf.is_dir() and record.is_file():
        return hf, {**json.loads(record.read_text()), "reused": True}
    info = {"commands": [" ".join(train), " ".join(export)],
            "train_s": _run([sys.executable, *train[1:], "--force"]),
            "export_s": _run([sys.executable, "-m", "jaxmodels_interop.convert_cli", *export[1:], "--force"])}
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    info["teacher_eval_loss_own_split"] = evals[-1]["loss"] if evals else None
    atomic_write_text(record, json.dumps(info, indent=2) + "\n")
    return hf, {**info, "reused": False}


def heldout_corpus(work: Path) -> Path:
    """The teacher trainer's held-out documents (every 20th stdlib file), joined as token_stream joins them."""
    from jaxmodels_training.data import load_documents

    path = work / "heldout.txt"
    if not path.is_file():
        docs = load_documents()
        atomic_write_text(path, "\n\n".join(docs[19::20]))  # never a half-written file that is_file() reuses
    return path


def teacher_flops_per_token(teacher, window: int) -> dict[str, int]:
    """2 x matmul parameters (the LM head included, an untied input embedding left out: a lookup) + attention over
    a context of `window` tokens (QK^T and PV: 4 x window x attention width per layer), as for one new token with a
    KV cache."""
    if hasattr(teacher, "model") and hasattr(teacher.model, "parameters"):  # transformers
        m = teacher.model
        n = sum(p.numel() for p in m.parameters() if p.ndim == 2)
        inp, out = m.get_input_embeddings(), m.get_output_embeddings()
        if out is not None and out.weight is not inp.weight:
            n -= inp.weight.numel()
        cfg = m.config.get_text_config()
        layers, width = cfg.num_hidden_layers, cfg.num_attention_heads * getattr(
            cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    else:  # ours
        from jaxmodels.checkpoint import flat_params

        params = flat_params(teacher.model)
        n = sum(int(v.size) for v in params.values() if v.ndim == 2)
        if any(k.startswith("lm_head") for k in params):
            n -= int(params["embed.weight"].size)
        spec = teacher.model.spec
        layers, width = spec.n_layers, spec.n_heads * spec.head_dim
    attention = 4 * layers * window * width
    return {"matmul_params": int(n), "weights": int(2 * n), "attention": int(attention),
            "lm_head": int(2 * teacher.hidden_size * teacher.vocab_size), "total": int(2 * n + attention)}


def measure(teacher, ckpt, windows, batch: int) -> dict[str, float]:
    """Median seconds per call over the same `batch` held-out windows, alternating: the teacher's forward, the
    student's context build (flattening, hashed n-grams, phases) and its prediction from built contexts."""
    from jaxmodels.htft import ContextBuilder

    builder = ContextBuilder(ckpt.context_config)
    tokens, hidden = windows.tokens[:batch], windows.hidden[:batch]
    rope = None if windows.rope is None else windows.rope[:batch]
    built = builder.build(tokens, hidden, rope)
    times = time_alternating({"teacher": lambda: teacher.run(tokens, False),
                              "student_build": lambda: builder.build(tokens, hidden, rope),
                              "student_predict": lambda: ckpt.model.predict(built.context, built.tail)},
                             warmup=1, runs=5)
    out = {k: v["median"] for k, v in times.items()}
    return {**out, "student": out["student_build"] + out["student_predict"]}


def gap_closed(record: dict) -> float:
    """htft_summary.gap_closed of an evaluation record (its eval_ppl as the student's)."""
    return htft_summary.gap_closed(record["unigram_ppl"], record["eval_ppl"], record["teacher_ppl"])


def main(argv: list[str]) -> None:
    from jaxmodels_interop.teacher import capture
    from jaxmodels_interop.teacher_load import load_teacher
    from jaxmodels.htft import load_htft_checkpoint
    from jaxmodels.htft.trainer import cross_entropy
    from jaxmodels_training import htft

    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        extra = []
    p = argparse.ArgumentParser(prog="python -m benchmarks htft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="a teacher directory (default: train and export one into WORK)")
    p.add_argument("--tokenizer", help="the teacher's tokenizer, as training.htft --tokenizer (default: bytes for "
                                       "the teacher trained here)")
    p.add_argument("--work", default="/tmp/htft-bench", help="teacher, held-out corpus, capture cache, student")
    p.add_argument("--quick", action="store_true", help="a 20-step teacher and a tiny student (a smoke test)")
    p.add_argument("--timing-batch", type=int, default=64, help="held-out windows per timed call")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[17, 18, 19],
                   help="student seeds, comma-separated (default 17,18,19)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    work = Path(args.work) / mode
    work.mkdir(parents=True, exist_ok=True)
    teacher_info = {"given": args.teacher}
    if args.teacher:
        teacher_dir, tokenizer = Path(args.teacher), args.tokenizer
    else:
        (teacher_dir, teacher_info), tokenizer = train_teacher(work, TEACHER_STEPS[mode]), args.tokenizer or "bytes"
    corpus = heldout_corpus(work)

    htft_argv = ["--model", str(teacher_dir), "--data", str(corpus), "--cache-dir", str(work / "cache"), "--force",
                 *(QUICK if args.quick else STUDENT), *extra] + (["--tokenizer", tokenizer] if tokenizer else [])
    runs = {}
    for seed in args.seeds:  # the first seed's student is the one timed; the others show the spread
        out = work / "student" / f"htft-seed{seed}.npz"
        hargs = htft.build_parser().parse_args([*htft_argv, "--output", str(out), "--seed", str(seed)])
        t0 = time.perf_counter()
        htft.run(hargs)
        runs[seed] = {"seconds": time.perf_counter() - t0, "checkpoint": out, "args": hargs,
                      "metrics": [json.loads(x) for x in out.with_suffix(".jsonl").read_text().splitlines()]}
    seed = args.seeds[0]
    hargs, metrics, pipeline_s = runs[seed]["args"], runs[seed]["metrics"], runs[seed]["seconds"]
    last = metrics[-1]

    teacher = load_teacher(str(teacher_dir), tokenizer)
    ckpt = load_htft_checkpoint(runs[seed]["checkpoint"])
    _, held = htft._streams(hargs, teacher)  # the held-out tokens, exactly as the run split them
    windows, _ = capture(teacher, held, seq_len=hargs.seq_len, stride=hargs.stride,
                         max_windows=hargs.max_eval_examples, with_logits=True, batch_size=hargs.batch_size,
                         cache_dir=work / "cache")
    teacher_full_nll = float(np.mean(cross_entropy(windows.logits, windows.targets)))
    w = hargs.seq_len
    t_flops, s_flops = teacher_flops_per_token(teacher, w), ckpt.model.predict_flops()
    batch = min(args.timing_batch, len(windows))
    secs = measure(teacher, ckpt, windows, batch)
    t_ms, s_ms = 1e3 * secs["teacher"] / (batch * w), 1e3 * secs["student"] / batch

    u, s, t = (math.log(last[k]) for k in ("unigram_ppl", "eval_ppl", "teacher_ppl"))
    closed = gap_closed(last)
    rows = [
        {"model": "unigram (add-one, training stream)", "held-out ppl": last["unigram_ppl"], "nats/token": u,
         "gap closed": 0.0, "FLOPs/token": 0, "ms/token": ""},
        {"model": f"student (HTFT, seed {seed}), own compute", "held-out ppl": last["eval_ppl"], "nats/token": s,
         "gap closed": closed, "FLOPs/token": s_flops["total"], "ms/token": s_ms},
        {"model": "teacher, truncated (shortlist + other)", "held-out ppl": last["teacher_ppl"], "nats/token": t,
         "gap closed": 1.0, "FLOPs/token": t_flops["total"], "ms/token": t_ms},
        {"model": "teacher, full vocabulary", "held-out ppl": math.exp(teacher_full_nll),
         "nats/token": teacher_full_nll, "gap closed": "", "FLOPs/token": t_flops["total"], "ms/token": t_ms},
        {"model": "student end to end (teacher hidden states + student)", "held-out ppl": last["eval_ppl"],
         "nats/token": s, "gap closed": closed, "FLOPs/token": t_flops["total"] + s_flops["total"],
         "ms/token": t_ms + s_ms},
    ]
    seeds = [{"seed": k, "eval_ppl": r["metrics"][-1]["eval_ppl"], "gap closed": gap_closed(r["metrics"][-1]),
              "train s": r["seconds"]} for k, r in runs.items()]
    results = {"teacher": {"dir": str(teacher_dir), "tokenizer": tokenizer, **teacher_info, "flops": t_flops,
                           "seconds_per_batch": secs["teacher"]},
               "student": {"flops": s_flops, "seconds_per_batch": {k: v for k, v in secs.items() if k != "teacher"},
                           "settings": htft_argv,
                           "diagnostics": ckpt.metadata.get("diagnostics"), "phases": ckpt.metadata.get("phases")},
               "seeds": seeds, "timing_batch": batch, "window": w, "pipeline_s": pipeline_s, "metrics": metrics,
               "gap_closed_log_ppl": closed,
               "gap_closed_ppl": (last["unigram_ppl"] - last["eval_ppl"]) / (last["unigram_ppl"] - last["teacher_ppl"])}
    notes = "\n\n".join([
        f"Held-out text: {corpus.name} (the teacher trainer's held-out stdlib files), tokens {hargs.train_tokens}.."
        f"{hargs.train_tokens + hargs.eval_tokens} of its stream; {len(windows)} evaluation windows of {w} tokens "
        f"(stride {hargs.stride}); the student trained on {last['step']} windows from the first {hargs.train_tokens} "
        f"tokens. Perplexities are over the compact vocabulary ({ckpt.vocab.num_classes} classes: shortlist + other); "
        f"'gap closed' = (unigram - student) / (unigram - teacher) in nats per token "
        f"({closed:.1%}; in perplexity {results['gap_closed_ppl']:.1%}).",
        f"FLOPs per predicted token: teacher = 2 x {t_flops['matmul_params']:,} matmul parameters + attention over "
        f"{w} tokens ({t_flops['attention']:,}), as one new token with a KV cache (its LM head alone: "
        f"{t_flops['lm_head']:,}); student = its two projections and fields ({s_flops}). The student reads the "
        f"teacher's final hidden states of the whole window, so end to end it costs the teacher plus itself.",
        f"Wall time per predicted token, median of 5 alternating runs on the same {batch} held-out windows: teacher "
        f"= one forward over the windows (hidden states of all {batch} x {w} positions) / ({batch} x {w}); student "
        f"= (context build + prediction) for the {batch} windows / {batch}: "
        f"{1e3 * secs['student_build'] / batch:.3f} + {1e3 * secs['student_predict'] / batch:.3f} ms. Without a KV "
        f"cache the teacher needs a whole window per prediction: {1e3 * secs['teacher'] / batch:.2f} ms.",
        f"Pipeline for seed {seed} (teacher capture, cached for the other seeds; vocabulary; one training pass; "
        f"evaluations): {pipeline_s:.0f} s. Teacher: {teacher_info}.",
        "Student seeds (same teacher windows, same settings):\n\n" + markdown_table(seeds),
        "Evaluations:\n\n" + markdown_table([{k: r[k] for k in ("step", "train_ppl", "eval_ppl", "teacher_ppl",
                                                                  "unigram_ppl", "samples_per_s")} for r in metrics])])
    write_results("htft-quick" if args.quick else "htft", results, rows, notes=notes)
