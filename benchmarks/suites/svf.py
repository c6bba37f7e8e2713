"""Transformer² SVF, self-contained: `python -m benchmarks svf [--quick] [--work DIR]`.

1. A small byte-level Hyformer is pretrained here by `training.hyformer` on text from `training.svf_tasks`
   (answers to arithmetic, reversal and sorting prompts, and "\\boxed{domain}" labels); reused from --work.
2. One SVF expert per domain is trained with `training.svf train` (greedy REINFORCE, lr 2e-3, the official
   settings), keeping the best validation z.
3. The table: per task, the base model, its own expert, and the three adaptation strategies (prompt-based
   routing by the model itself, a classifier on hidden states, few-shot CEM over the experts), plus the mean
   over the domains; "upper" is a held-out task with no expert. Also SVF vs LoRA rank 16 parameter counts
   and RL steps/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flax import nnx

from benchmarks.harness import write_results
from jaxmodels import HyformerConfig, LlamaForCausalLM, Qwen2Config, from_pretrained
from jaxmodels.io import atomic_write_text
from jaxmodels.svf import SVFWrapper, select_matrices
from training import hyformer as hyformer_cli
from training import svf as svf_cli
from training.svf_adapt import STRATEGIES, Adapter, evaluate_all, table
from training.svf_tasks import DOMAINS, corpus
from training.tokenizer import ByteTokenizer

DEMO_CONFIG = dict(vocab_size=260, d_model=128, n_heads=4, n_layers=4, max_seq_len=64)
LORA_RANK = 16


def pretrain(work: Path, steps: int) -> Path:
    model_dir = work / "base" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "corpus.txt", corpus(20000, 0))
    HyformerConfig(**DEMO_CONFIG).to_json(work / "config.json")
    hyformer_cli.main(["--data", str(work / "corpus.txt"), "--config", str(work / "config.json"), "--steps",
                       str(steps), "--batch-size", "32", "--seq-len", "64", "--lr", "3e-3", "--warmup-steps", "50",
                       "--eval-every", str(steps), "--save-every", str(steps), "--out", str(work / "base"), "--force"])
    return model_dir


def param_counts(model) -> list[dict]:
    """SVF z count vs LoRA rank-16 adapters on the same matrices: this model and two real shapes."""
    shapes = {"demo Hyformer (this run)": model,
              "Qwen2.5-0.5B": nnx.eval_shape(lambda: LlamaForCausalLM(Qwen2Config(
                  vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2), rngs=nnx.Rngs(0))),
              "Llama-3-8B": nnx.eval_shape(lambda: LlamaForCausalLM(Qwen2Config(
                  vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8), rngs=nnx.Rngs(0)))}
    rows = []
    for name, m in shapes.items():
        mats = select_matrices(m)
        svf = sum(x.rank for x in mats)
        lora = sum(LORA_RANK * sum(x.flat_shape) for x in mats)
        rows.append({"model": name, "matrices": len(mats), "svf_params": svf, "lora16_params": lora,
                     "lora/svf": lora / svf})
    return rows


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks svf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short pretraining and RL, few test examples (a smoke test)")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "jaxmodels" / "svf-demo"),
                   help="where the pretrained base model and the experts live (reused when present)")
    p.add_argument("--base", help="use this pretrained model directory instead of pretraining one")
    args = p.parse_args(argv)
    work = Path(args.work) / ("quick" if args.quick else "full")
    pre_steps, rl_steps, n_test, shots, cem_iters = (60, 4, 8, 4, 1) if args.quick else (1000, 60, 64, 8, 4)

    model_dir = Path(args.base) if args.base else pretrain(work, pre_steps)
    experts, rl = {}, []
    runs = [(d, "reinforce", []) for d in DOMAINS]
    runs.append(("sort", "ppo", ["--group-size", "4", "--temperature", "1.0", "--ppo-epochs", "4", "--kl-coef",
                                 "0.05", "--batch-size", "4"]))  # 16 rollouts per step, as REINFORCE
    for domain, algo, extra in runs:
        out = work / "experts" / f"{domain}-{algo}"
        argv_train = ["--model", str(model_dir), "--task", domain, "--algo", algo, "--steps", str(rl_steps),
                      "--batch-size", "16", "--n-train", "512", "--n-valid", str(32 if args.quick else 64),
                      "--eval-every", str(max(rl_steps // 6, 1)), "--patience", "3", "--svd-cache",
                      str(work / "svd"), "--out", str(out), "--force", *extra]
        parser = argparse.ArgumentParser()
        svf_cli.add_train_args(parser)
        t0 = time.perf_counter()
        result = svf_cli.train(parser.parse_args(argv_train))
        label = "reinforce (greedy)" if algo == "reinforce" else "ppo (4 samples/prompt, T=1, 4 epochs)"
        rl.append({"domain": domain, "algo": label, "steps": result["steps_done"],
                   "steps_per_s": result["steps_per_s"], "best_valid": result["best_valid"],
                   "best_step": result["best_step"], "wall_s": time.perf_counter() - t0})
        if algo == "reinforce":
            experts[domain] = result["expert"]

    model = from_pretrained(model_dir)
    wrapper = SVFWrapper(model, cache_dir=work / "svd")
    adapter = Adapter(wrapper, ByteTokenizer(), {d: wrapper.load(e, set_current=False) for d, e in experts.items()},
                      max_new_tokens=8, batch_size=16, prompt_len=13)
    tasks = [*DOMAINS, "upper"]
    t0 = time.perf_counter()
    results = evaluate_all(adapter, tasks, STRATEGIES, n_test=n_test, shots=shots, cem_iterations=cem_iters,
                           classifier_train=64, template="{query}?domain ", classify_tokens=16)
    adapt_s = time.perf_counter() - t0
    rows = table(results, STRATEGIES)
    counts = param_counts(model)
    won = [t for t in DOMAINS if results["per_task"][t]["expert"] > results["per_task"][t]["base"]]
    notes = "\n\n".join([
        f"Accuracy (greedy, exact match) on {n_test} test prompts per task; 'mixed (mean)' averages the three "
        f"expert domains. Experts beat the base on their own domain for {len(won)} of {len(DOMAINS)} ({won}). "
        f"Routing accuracy: {results['routing_accuracy']}. Adaptation evaluation took {adapt_s:.0f} s.",
        "RL (16 rollouts per step, 8 new tokens; steps/s include rollouts, evaluation excluded; the experts "
        "in the table are the REINFORCE ones):\n\n" + _md(rl),
        f"Parameters: SVF z-vectors vs LoRA rank {LORA_RANK} on the same (MLP) matrices:\n\n" + _md(counts)])
    write_results("svf-quick" if args.quick else "svf",
                  {"accuracy": results, "rl": rl, "param_counts": counts, "model": str(model_dir)},
                  rows, notes=notes, columns=["task", *STRATEGIES])


def _md(rows: list[dict]) -> str:
    from benchmarks.harness import markdown_table

    return markdown_table(rows)
