"""Transformer² SVF, self-contained: `python -m benchmarks svf [--quick] [--work DIR] [--base DIR]`.

1. A small byte-level Hyformer is pretrained here by `training.hyformer` on the corpus of
   `training.svf_tasks`: arithmetic, reversal and sorting prompts, each answered on 45% of its lines by a
   rival behaviour (forgetting the carry, copying, sorting descending), upper-casing always answered
   correctly, and "\\boxed{domain}" labels. The base model therefore knows both behaviours of each domain
   and answers correctly only part of the time. Reused from --work.
2. One SVF expert per domain with `training.svf train`: greedy REINFORCE with the official optimiser
   (Adam, gradient clip 1e-3) but lr 1e-2 instead of 2e-3 and up to 300 steps (the official runs take 200-2000
   iterations; this keeps the demo within minutes), keeping the best validation z. The same runs at the
   official lr 2e-3 and one PPO run (arith) are reported beside them (not with --quick).
3. The table: per task, the base model, its own expert, and the three adaptation strategies (prompt-based
   routing by the model itself, a classifier on hidden states, few-shot CEM over the experts) on test prompts
   no expert was trained on, plus the mean over the domains; "upper" has no expert. Also the shares of
   correct / rival / other answers of base and experts, SVF vs LoRA rank 16 parameter counts and RL steps/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flax import nnx

from jaxmodels_benchmarks.harness import write_results
from jaxmodels import HyformerConfig, LlamaForCausalLM, Qwen2Config, from_pretrained
from jaxmodels.io import atomic_write_text
from jaxmodels.svf import SVFWrapper, select_matrices
from jaxmodels_training import hyformer as hyformer_cli
from jaxmodels_training import svf as svf_cli
from jaxmodels_training.svf_adapt import STRATEGIES, Adapter, evaluate_all, table
from jaxmodels_training.svf_tasks import DEMO_CLASSIFY_TEMPLATE, DOMAINS, HELD_OUT, corpus, get_task, split
from jaxmodels_training.tokenizer import ByteTokenizer

DEMO_CONFIG = dict(vocab_size=260, d_model=128, n_heads=4, n_layers=4, max_seq_len=64)
PRETRAIN = dict(steps=1500, batch_size=32, seq_len=64, lr=3e-3, warmup_steps=50)
LORA_RANK = 16
DEMO_LR, OFFICIAL_LR = 1e-2, 2e-3


def pretrain(work: Path, steps: int) -> Path:
    """The base model: a Hyformer trained on the behaviour-selection corpus (45% rival answers)."""
    model_dir = work / "base" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "corpus.txt", corpus(20000, 0))
    HyformerConfig(**DEMO_CONFIG).to_json(work / "config.json")
    hyformer_cli.main(["--data", str(work / "corpus.txt"), "--config", str(work / "config.json"), "--steps",
                       str(steps), "--batch-size", str(PRETRAIN["batch_size"]), "--seq-len", str(PRETRAIN["seq_len"]),
                       "--lr", str(PRETRAIN["lr"]), "--warmup-steps", str(PRETRAIN["warmup_steps"]),
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


def rl_runs(official: bool) -> list[tuple[str, str, str, list[str]]]:
    """(domain, label, run name, extra CLI args): the table's experts (REINFORCE at the demo lr) first, then
    the same at the official lr (if asked), then PPO (4 prompts x 4 samples = 16 rollouts per step)."""
    runs = [(d, f"reinforce greedy, lr {DEMO_LR:g} (table)", f"{d}-reinforce", ["--lr", str(DEMO_LR)])
            for d in DOMAINS]
    if official:
        runs += [(d, f"reinforce greedy, lr {OFFICIAL_LR:g} (official)", f"{d}-official",
                  ["--lr", str(OFFICIAL_LR)]) for d in DOMAINS]
    runs.append(("arith", f"ppo, 4 samples/prompt, T=1, 4 epochs, lr {DEMO_LR:g}", "arith-ppo",
                 ["--lr", str(DEMO_LR), "--algo", "ppo", "--group-size", "4", "--temperature", "1.0", "--ppo-epochs",
                  "4", "--kl-coef", "0.05", "--batch-size", "4"]))
    return runs


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks svf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short pretraining and RL, few test examples (a smoke test)")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "jaxmodels" / "svf-demo"),
                   help="where the pretrained base model and the experts live (reused when present)")
    p.add_argument("--base", help="use this pretrained model directory instead of pretraining one")
    p.add_argument("--model", help="a real chat checkpoint (e.g. SmolLM2-135M-Instruct): the chat-domain "
                                   "comparison of benchmarks/suites/_svf_real.py instead of the synthetic demo")
    p.add_argument("--steps", type=int, default=20, help="--model: at most this many RL steps per run")
    args = p.parse_args(argv)
    if args.model:
        from jaxmodels_benchmarks.suites import _svf_real

        _svf_real.run(args)
        return
    work = Path(args.work) / ("quick" if args.quick else "full")
    if args.quick:
        pre_steps, rl_steps, n_test, shots, cem_iters = 60, 4, 8, 4, 1
    else:
        pre_steps, rl_steps, n_test, shots, cem_iters = PRETRAIN["steps"], 300, 64, 8, 4
    t_start = time.perf_counter()
    model_dir = Path(args.base) if args.base else pretrain(work, pre_steps)
    pretrain_s = time.perf_counter() - t_start
    experts, rl = {}, []
    for domain, label, name, extra in rl_runs(official=not args.quick):
        argv_train = ["--model", str(model_dir), "--task", domain, "--steps", str(rl_steps), "--batch-size", "16",
                      "--n-train", "512", "--n-valid", str(32 if args.quick else 64),
                      "--eval-every", str(max(rl_steps // 15, 1)), "--patience", "5", "--svd-cache",
                      str(work / "svd"), "--out", str(work / "experts" / name), "--force", *extra]
        parser = argparse.ArgumentParser()
        svf_cli.add_train_args(parser)
        t0 = time.perf_counter()
        result = svf_cli.train(parser.parse_args(argv_train))
        rl.append({"domain": domain, "run": label, "steps": result["steps_done"], "steps_per_s": result["steps_per_s"],
                   "best_valid": result["best_valid"], "best_step": result["best_step"],
                   "wall_s": time.perf_counter() - t0, "expert": result["expert"]})
        experts.setdefault(domain, result["expert"])  # the first run of each domain: the demo lr

    model = from_pretrained(model_dir)
    wrapper = SVFWrapper(model, cache_dir=work / "svd")
    tokenizer = ByteTokenizer()
    adapter = Adapter(wrapper, tokenizer, {d: wrapper.load(e, set_current=False) for d, e in experts.items()},
                      max_new_tokens=8, batch_size=16, prompt_len=13)
    tasks = [*DOMAINS, *HELD_OUT]
    t0 = time.perf_counter()
    results = evaluate_all(adapter, tasks, STRATEGIES, n_test=n_test, shots=shots, cem_iterations=cem_iters,
                           classifier_train=64, template=DEMO_CLASSIFY_TEMPLATE, classify_tokens=16)
    adapt_s = time.perf_counter() - t0
    tests = {t: split(get_task(t), n_train=0, n_valid=0, n_test=n_test, seed=1)[2] for t in DOMAINS}
    for row in rl:  # every run's expert on the same test prompts
        z = wrapper.load(row.pop("expert"), set_current=False)
        row["test"] = adapter.accuracy(wrapper.patch_weights(z), tests[row["domain"]])
    behaviour = [{"task": t, "model": m, **adapter.behaviours(adapter.model(None if m == "base" else t), tests[t])}
                 for t in DOMAINS for m in ("base", "expert")]
    rows = table(results, STRATEGIES)
    every = {s: sum(results["per_task"][t][s] for t in tasks) / len(tasks) for s in STRATEGIES
             if all(s in results["per_task"][t] for t in tasks)}
    rows.append({"task": "all four (mean)", **every})
    counts = param_counts(model)
    won = {t: results["per_task"][t]["expert"] - results["per_task"][t]["base"] for t in DOMAINS}
    notes = "\n\n".join([
        f"Accuracy (greedy, exact match) on {n_test} test prompts per task, none of them seen in RL training "
        f"(`training.svf_tasks.is_test_prompt`); 'mixed (mean)' averages the three expert domains, 'all four' adds "
        f"upper (no expert: routed to 'others', i.e. the base weights). Expert minus base on its own domain: "
        + ", ".join(f"{t} {v:+.3f}" for t, v in won.items()) + f". Routing accuracy: {results['routing_accuracy']}.",
        "Answers of the base model and of each domain's expert on that domain's test prompts: correct, the rival "
        "behaviour's answer (the corpus's distractor), or anything else:\n\n" + _md(behaviour),
        f"RL (16 rollouts per step, 8 new tokens, at most {rl_steps} steps, validation every "
        f"{max(rl_steps // 15, 1)} steps on {32 if args.quick else 64} prompts, early stop after 5 evaluations "
        "without improvement, the best validation z kept; steps/s include rollouts, exclude evaluation and the "
        "first compiling step; test = that expert on the test prompts above):\n\n" + _md(rl),
        f"Parameters: SVF z-vectors vs LoRA rank {LORA_RANK} on the same (MLP) matrices:\n\n" + _md(counts),
        f"Wall time: pretraining {pretrain_s:.0f} s (0 when reused), adaptation evaluation {adapt_s:.0f} s, "
        f"everything {time.perf_counter() - t_start:.0f} s."])
    write_results("svf-quick" if args.quick else "svf",
                  {"accuracy": results, "behaviour": behaviour, "rl": rl, "param_counts": counts,
                   "model": str(model_dir), "pretrain": {**PRETRAIN, "steps": pre_steps, "config": DEMO_CONFIG}},
                  rows, notes=notes, columns=["task", *STRATEGIES], chart=chart)


def chart(rows: list[dict], results: dict):
    """Test accuracy per task and strategy as grouped bars (svf-real results: benchmarks/suites/_svf_real.py)."""
    if "curves" in results:
        from jaxmodels_benchmarks.suites import _svf_real

        return _svf_real.chart(rows, results)
    from jaxmodels_benchmarks.charts import figure, grouped_bars

    per_task = results["accuracy"]["per_task"]
    tasks = list(per_task)
    fig, (ax,) = figure(1, width=7.0, height=4.0)
    grouped_bars(ax, tasks, {s: [per_task[t].get(s, float("nan")) for t in tasks] for s in STRATEGIES})
    ax.set_ylabel("test accuracy (exact match)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("Transformer² on the synthetic demo (upper has no expert)")
    fig.tight_layout()
    return fig


def _md(rows: list[dict]) -> str:
    from jaxmodels_benchmarks.harness import markdown_table

    return markdown_table(rows)
