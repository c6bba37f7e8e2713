"""`python -m benchmarks sft-demo --model DIR`: supervised fine-tuning of a chat model with `training.lm`, shown
on held-out questions: the reply format it learns, the held-out loss before and after, and the exported model
answering the same in transformers.

The task (benchmarks/suites/_sft_task.py): short questions of four kinds, each to be answered as one line of
JSON, {"answer": ..., "kind": ...}, which an instruct model does not do unprompted. Steps:

1. writes the seeded train and held-out sets as chat JSONL into --work;
2. scores the base model on the held-out questions: greedy replies (our `generate`), the share in the format
   and the share also right, and the loss of the taught replies (nats per token);
3. runs `python -m training.lm --model DIR --chat train.jsonl --eval-data held-out.jsonl --lora-rank R --merge`;
4. scores the merged model (OUT/model) the same way;
5. exports it with `jaxmodels-convert to-hf` and lets transformers answer the same questions: its replies
   are compared with ours text for text.

Writes benchmarks/results/sft-demo.{json,md,png} (scores, and the loss curve of the run). Needs a model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import write_results
from jaxmodels_benchmarks.suites import _sft_eval as scoring
from jaxmodels_benchmarks.suites._sft_task import make_sets, write_chat_jsonl

IN_ALL = False  # needs --model
EOS_FALLBACK = 2


def _run(cmd: list[str]) -> float:
    """Runs a command (output passed through), raising on failure; returns its wall time."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def _score(name: str, model, tokenizer, items, eos: int) -> tuple[dict, list[str]]:
    t = time.perf_counter()
    texts = scoring.replies_ours(model, tokenizer, items, eos=eos)
    result = {**scoring.summary(texts, items), "reply_loss": scoring.reply_loss(model, tokenizer, items),
              "score_s": time.perf_counter() - t}
    print(f"{name}: format {result['format']:.1%}, correct {result['correct']:.1%}, "
          f"reply loss {result['reply_loss']:.3f}", flush=True)
    return result, texts


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks sft-demo", description=__doc__)
    p.add_argument("--model", required=True, help="a chat model: HF directory, our checkpoint or .gguf (with a "
                                                  "tokenizer and chat template beside it)")
    p.add_argument("--work", help="where the data, the run and the export go (default: a temporary directory)")
    p.add_argument("--train", type=int, default=192, help="training examples (a multiple of 4)")
    p.add_argument("--held-out", type=int, default=64, help="held-out examples (a multiple of 4)")
    p.add_argument("--steps", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    import transformers

    import jaxmodels

    torch.set_num_threads(2)
    work = Path(args.work or tempfile.mkdtemp(prefix="sft-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    train, held = make_sets(args.train, args.held_out, args.seed)
    write_chat_jsonl(train, work / "train.jsonl")
    write_chat_jsonl(held, work / "held-out.jsonl")
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else EOS_FALLBACK

    base, base_texts = _score("base", jaxmodels.from_pretrained(args.model), tokenizer, held, eos)

    run = work / "run"
    train_s = _run([sys.executable, "-m", "jaxmodels_training.lm", "--model", args.model,
                    "--chat", str(work / "train.jsonl"), "--eval-data", str(work / "held-out.jsonl"),
                    "--lora-rank", str(args.lora_rank), "--merge", "--steps", str(args.steps),
                    "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--lr", str(args.lr),
                    "--warmup-steps", str(max(1, args.steps // 10)), "--eval-every", str(max(1, args.steps // 4)),
                    "--log-every", "4", "--seed", str(args.seed), "--out", str(run), "--force"])
    tuned_model = jaxmodels.from_pretrained(run / "model")
    tuned, tuned_texts = _score("fine-tuned", tuned_model, tokenizer, held, eos)

    hf_dir = work / "exported-hf"
    _run([sys.executable, "-m", "jaxmodels_interop.convert_cli", "to-hf", str(run / "model"), str(hf_dir), "--force"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    hf_texts = scoring.replies_transformers(hf, tokenizer, held, eos=eos)
    exported = scoring.summary(hf_texts, held)
    same = sum(a == b for a, b in zip(hf_texts, tuned_texts)) / len(held)
    print(f"exported, in transformers: format {exported['format']:.1%}, correct {exported['correct']:.1%}, "
          f"same replies as ours {same:.1%}", flush=True)

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = []
    for name, r in (("base (ours)", base), ("fine-tuned (ours)", tuned), ("fine-tuned, exported (transformers)",
                                                                          exported)):
        rows.append({"model": name, "in format": f"{r['format']:.1%} ± {r['format_se']:.1%}",
                     "format and right": f"{r['correct']:.1%} ± {r['correct_se']:.1%}",
                     "held-out reply loss": r.get("reply_loss", "")})
    examples = [{"question": it["question"], "base": b, "fine-tuned": t, "transformers": h}
                for it, b, t, h in list(zip(held, base_texts, tuned_texts, hf_texts))[:6]]
    results = {"base": base, "fine_tuned": tuned, "exported": exported, "same_replies": same, "train_s": train_s,
               "examples": examples, "metrics": metrics,
               "settings": {k: getattr(args, k) for k in ("train", "held_out", "steps", "batch_size", "seq_len",
                                                          "lr", "lora_rank", "seed")}}
    shown = "\n".join(f"- {e['question']!r}: base {e['base']!r} -> fine-tuned {e['fine-tuned']!r}"
                      for e in examples[:4])
    notes = (f"Model {args.model}; LoRA rank {args.lora_rank} (alpha 2R) on every projection, {args.steps} steps of "
             f"batch {args.batch_size} x {args.seq_len} tokens, lr {args.lr}, {args.train} training and "
             f"{args.held_out} held-out questions (disjoint), seed {args.seed}; training took {train_s:.0f} s "
             f"(`python -m training.lm`, 2 cores). Scores are over the held-out questions with standard errors; "
             f"'in format': the greedy reply is exactly one JSON object with keys answer and kind (the right kind); "
             f"'format and right': its answer is also correct. Held-out reply loss: nats per token of the taught "
             f"replies. The exported model (jaxmodels-convert to-hf of the merged model) in transformers gives "
             f"the same replies as ours for {same:.1%} of the questions.\n\nHeld-out examples:\n{shown}")
    write_results("sft-demo", results, rows, notes=notes, chart=chart)


def chart(rows: list[dict], results: dict):
    fig, (left, right) = figure(2, width=5.5)
    parts = [results["base"], results["fine_tuned"], results["exported"]]
    grouped_bars(left, ["base", "fine-tuned", "exported (transformers)"],
                 {"in format": [r["format"] for r in parts], "format and right": [r["correct"] for r in parts]},
                 errors={"in format": [r["format_se"] for r in parts],
                         "format and right": [r["correct_se"] for r in parts]})
    left.set_ylim(0, 1)
    left.set_title("Held-out questions")
    left.legend()
    for split, style in (("train", "-"), ("eval", "o-")):
        pts = [(m["step"], m["loss"]) for m in results["metrics"]
               if m.get("split") == split and m.get("loss") is not None]
        if pts:
            right.plot(*zip(*pts), style, label=split)
    right.set_xlabel("step")
    right.set_ylabel("loss (assistant tokens, nats)")
    right.set_title("training.lm run")
    right.legend()
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
