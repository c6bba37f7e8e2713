"""The HTFT end to end on real text: `python -m benchmarks htft [--teacher DIR] [--work DIR] [-- HTFT flags]`.

Two setups, three student seeds each:
- `--teacher DIR` (e.g. SmolLM2-135M-Instruct): a real teacher on real English text, the corpus of
  `_htft_corpus.py` (the prose of the Python documentation topics in the standard library; every 5th topic held
  out), with the seed's vocabulary handling: a `--vocab-limit` shortlist of the teacher's tokens (1024 by default)
  plus "other" as the student's classes. The teacher runs in JAX when it is a family we implement
  (`--teacher-backend`). Results: benchmarks/results/htft-teacher.{json,md,png}.
- no --teacher (or `--corpus code`): a byte-level Hyformer trained here (`python -m training.hyformer`, the Python
  standard library's sources) exported with `jaxmodels-convert to-hf` into WORK/teacher_hf (reused when present),
  distilled on the teacher trainer's own held-out documents (every 20th stdlib source file).
  Results: benchmarks/results/htft.{json,md,png}.
The student: `python -m training.htft` (in process) with the settings ENGLISH or STUDENT (flags after `--` override
them). Compute per predicted token: analytic FLOPs, and wall time measured side by side (alternating runs) on the
same held-out windows: the teacher's forward over the windows, the student's context build + prediction.
--quick: a smoke run into <name>-quick.*, not committed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxmodels_benchmarks.harness import time_alternating
from jaxmodels_benchmarks.suites import _htft_corpus, _htft_report
from jaxmodels.io import atomic_write_text

IN_ALL = False  # trains a teacher (about 15 min on 2 shared cores), or distils a real one (about 30 min)

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
           "1", "--hashed-dim", "4096", "--top-k", "32", "--train-top-k", "32",
           "--stage2-tau", "2", "--stage2-eta", "45", "--stage2-eta-g", "4.5", "--eval-every", "8250"]
QUICK = ["--train-tokens", "6000", "--eval-tokens", "2000", "--seq-len", "16", "--stride", "8",
         "--max-train-examples", "256", "--max-eval-examples", "64", "--stage1-tensors", "64", "--stage2-tensors",
         "64", "--stage1-countsketch-dim", "1024", "--stage1-srht-dim", "128", "--stage2-countsketch-dim", "0",
         "--stage2-srht-dim", "128", "--stage1-target-dim", "8", "--tail-tokens", "1", "--hashed-dim", "256",
         "--top-k", "16", "--train-top-k", "16", "--stage2-tau", "2", "--stage2-eta", "45", "--stage2-eta-g", "4.5",
         "--eval-every", "128"]
# A real teacher (SmolLM2-135M, 576 wide, 30 layers) costs ~1.3 ms per window position on these 2 cores, and each
# training window is a separate forward from position 0 (the seed's capture), so the windows are short (16 tokens)
# and overlap (stride 3: 20k windows over the 60k training tokens, 320k positions, 10-16 min niced); the held-out
# windows use stride 8 so that 1024 of them span all the held-out topics. The student as for the byte-level
# teacher, with 4096 Stage 2 tensors and 4 passes over the windows (one pass closed 37% of the gap, four 61%;
# docs/htft.md "A real teacher").
ENGLISH = ["--seq-len", "16", "--stride", "3", "--eval-stride", "8", "--max-train-examples", "20000",
           "--max-eval-examples", "1024", "--batch-size", "64", "--stage1-tensors", "128",
           "--stage1-countsketch-dim", "8192", "--stage1-srht-dim", "256", "--stage1-target-dim", "8",
           "--stage2-tensors", "4096", "--stage2-countsketch-dim", "0", "--stage2-srht-dim", "256", "--tail-tokens",
           "1", "--hashed-dim", "4096", "--top-k", "32", "--train-top-k", "32", "--stage2-tau", "2",
           "--stage2-eta", "45", "--stage2-eta-g", "4.5", "--epochs", "4", "--eval-every", "2500"]
ENGLISH_QUICK = ["--seq-len", "8", "--stride", "8", "--max-train-examples", "256", "--max-eval-examples", "64",
                 "--batch-size", "32", "--stage1-tensors", "64", "--stage2-tensors", "64", "--stage1-countsketch-dim",
                 "1024", "--stage1-srht-dim", "128", "--stage2-countsketch-dim", "0", "--stage2-srht-dim", "128",
                 "--stage1-target-dim", "8", "--tail-tokens", "1", "--hashed-dim", "256", "--top-k", "16",
                 "--train-top-k", "16", "--stage2-tau", "2", "--stage2-eta", "45", "--stage2-eta-g", "4.5",
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
    """Median seconds per call over the same `batch` held-out windows, alternating: the teacher's forward, its LM
    head alone (on the windows' last hidden states), the student's context build (flattening, hashed n-grams,
    phases) and its prediction from built contexts."""
    from jaxmodels.htft import ContextBuilder

    builder = ContextBuilder(ckpt.context_config)
    tokens, hidden = windows.tokens[:batch], windows.hidden[:batch]
    rope = None if windows.rope is None else windows.rope[:batch]
    built = builder.build(tokens, hidden, rope)
    last = np.ascontiguousarray(hidden[:, -1])  # [B, H]
    times = time_alternating({"teacher": lambda: teacher.run(tokens, False),
                              "teacher_head": lambda: teacher.head(last),
                              "student_build": lambda: builder.build(tokens, hidden, rope),
                              "student_predict": lambda: ckpt.model.predict(built.context, built.tail)},
                             warmup=1, runs=5)
    out = {k: v["median"] for k, v in times.items()}
    return {**out, "student": out["student_build"] + out["student_predict"]}


def english_corpus(work: Path, teacher, quick: bool) -> tuple[Path, dict, list[str]]:
    """WORK/english.txt (training topics, then held-out ones) and its token split as --train-tokens/--eval-tokens."""
    from jaxmodels_interop.teacher import token_stream
    from jaxmodels_training import htft

    path = work / "english.txt"
    train, held, source = _htft_corpus.write_corpus(path)
    n_train = len(token_stream(teacher, [train]))
    n_all = len(token_stream(teacher, htft._documents("--data", data=[str(path)])))
    if quick:
        n_train, n_all = min(n_train, 3000), min(n_train, 3000) + min(n_all - n_train, 1000)
    info = {"name": "English prose of the Python documentation topics", "source": source, "file": str(path),
            "train_tokens": n_train, "eval_tokens": n_all - n_train,
            "split": "the held-out tokens are topics the student never trained on (every 5th, sorted by name)"}
    return path, info, ["--train-tokens", str(n_train), "--eval-tokens", str(n_all - n_train)]


def main(argv: list[str]) -> None:
    from jaxmodels_interop.teacher import capture
    from jaxmodels_interop.teacher_load import BACKENDS, load_teacher
    from jaxmodels.htft import load_htft_checkpoint
    from jaxmodels.htft.trainer import cross_entropy
    from jaxmodels_training import htft

    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        extra = []
    p = argparse.ArgumentParser(prog="python -m benchmarks htft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="a teacher directory: a Hugging Face causal LM (e.g. SmolLM2) or one of ours "
                                     "(default: train and export a byte-level one into WORK)")
    p.add_argument("--tokenizer", help="the teacher's tokenizer, as training.htft --tokenizer (default: its own; "
                                       "bytes for the teacher trained here)")
    p.add_argument("--teacher-backend", choices=BACKENDS, default="auto", help="as training.htft --teacher-backend")
    p.add_argument("--corpus", choices=("english", "code"), help="english (the default with --teacher) or code "
                                                                  "(the stdlib held-out sources; the default without)")
    p.add_argument("--vocab-limit", type=int, help="the student's shortlist of teacher tokens (default 1024 for "
                                                   "english, 4096 for code)")
    p.add_argument("--work", default="/tmp/htft-bench", help="teacher, corpus, capture cache, students")
    p.add_argument("--quick", action="store_true", help="a tiny run (a 20-step teacher without --teacher): a "
                                                               "smoke test")
    p.add_argument("--timing-batch", type=int, default=64, help="held-out windows per timed call")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[17, 18, 19],
                   help="student seeds, comma-separated (default 17,18,19)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    english = (args.corpus or ("english" if args.teacher else "code")) == "english"
    if english and not args.teacher:
        p.error("--corpus english needs --teacher DIR (a real teacher, e.g. SmolLM2-135M-Instruct)")
    mode = "quick" if args.quick else "full"
    name = ("htft-teacher" if english else "htft") + ("-quick" if args.quick else "")
    work = Path(args.work) / (("teacher-" if english else "") + mode)
    work.mkdir(parents=True, exist_ok=True)
    teacher_info = {"given": args.teacher}
    if args.teacher:
        teacher_dir, tokenizer = Path(args.teacher), args.tokenizer
    else:
        (teacher_dir, teacher_info), tokenizer = train_teacher(work, TEACHER_STEPS[mode]), args.tokenizer or "bytes"
    t0 = time.perf_counter()
    teacher = load_teacher(str(teacher_dir), tokenizer, backend=args.teacher_backend)
    teacher_info["load_s"] = time.perf_counter() - t0
    if english:
        corpus, corpus_info, split = english_corpus(work, teacher, args.quick)
        settings = [*split, *(ENGLISH_QUICK if args.quick else ENGLISH)]
    else:
        corpus = heldout_corpus(work)
        corpus_info = {"name": "held-out Python standard library sources", "file": str(corpus),
                       "source": "every 20th stdlib source file (the teacher trainer's held-out documents)",
                       "split": "the first --train-tokens of that text train the student, the next are held out"}
        settings = list(QUICK if args.quick else STUDENT)
    settings += ["--vocab-limit", str(args.vocab_limit or (1024 if english else 4096))]
    htft_argv = ["--model", str(teacher_dir), "--data", str(corpus), "--cache-dir", str(work / "cache"), "--force",
                 "--teacher-backend", args.teacher_backend, *settings, *extra]
    htft_argv += ["--tokenizer", tokenizer] if tokenizer else []
    runs = {}
    cached = any((work / "cache").glob("teacher-*.npz"))  # windows of these settings may already be there
    for seed in args.seeds:  # the first seed's student is the one timed; the others show the spread
        out = work / "student" / f"htft-seed{seed}.npz"
        hargs = htft.build_parser().parse_args([*htft_argv, "--output", str(out), "--seed", str(seed)])
        t0 = time.perf_counter()
        htft.run(hargs)
        runs[seed] = {"seconds": time.perf_counter() - t0, "checkpoint": out, "args": hargs,
                      "capture": "cached" if runs or cached else "computed (empty cache)",
                      "metrics": [json.loads(x) for x in out.with_suffix(".jsonl").read_text().splitlines()]}
    seed = args.seeds[0]
    hargs = runs[seed]["args"]
    ckpt = load_htft_checkpoint(runs[seed]["checkpoint"])
    _, held = htft._streams(hargs, teacher)  # the held-out tokens, exactly as the run split them
    t0 = time.perf_counter()
    windows, hit = capture(teacher, held, seq_len=hargs.seq_len, stride=hargs.eval_stride or hargs.stride,
                           max_windows=hargs.max_eval_examples, with_logits=True, batch_size=hargs.batch_size,
                           cache_dir=work / "cache")
    teacher_full_nll = float(np.mean(cross_entropy(windows.logits, windows.targets)))
    w = hargs.seq_len
    batch = min(args.timing_batch, len(windows))
    secs = measure(teacher, ckpt, windows, batch)
    teacher_info.update(name=teacher_dir.name, dir=str(teacher_dir), tokenizer=tokenizer, backend=teacher.backend,
                        vocab_size=teacher.vocab_size, hidden_size=teacher.hidden_size)
    corpus_info["eval_windows"] = len(windows)
    if not english:
        corpus_info.update(train_tokens=hargs.train_tokens, eval_tokens=hargs.eval_tokens)
    corpus_info.update(train_windows=int(ckpt.metadata["step"]) // (hargs.epochs or 1), epochs=hargs.epochs or 1)
    pipeline = (f"Pipeline for seed {seed} (teacher capture: {runs[seed]['capture']}; vocabulary; training "
                f"passes; evaluations and checkpoints): {runs[seed]['seconds']:.0f} s; the other seeds "
                + ", ".join(f"{r['seconds']:.0f} s" for s, r in runs.items() if s != seed)
                + f"; the whole benchmark {(time.perf_counter() - started) / 60:.1f} min, run with nice -n 10 on the "
                f"2 cores shared with other engineers' jobs (load average {os.getloadavg()[0]:.1f} at the end). "
                f"Teacher: {teacher_info}.")
    _htft_report.report(name, runs=runs, corpus=corpus_info, teacher=teacher_info,
                        t_flops=teacher_flops_per_token(teacher, w), s_flops=ckpt.model.predict_flops(), secs=secs,
                        batch=batch, window=w, teacher_full_nll=teacher_full_nll, classes=ckpt.vocab.num_classes,
                        settings=htft_argv, extra_notes=[pipeline],
                        ckpt_meta={"diagnostics": ckpt.metadata.get("diagnostics"),
                                   "phases": ckpt.metadata.get("phases")})
