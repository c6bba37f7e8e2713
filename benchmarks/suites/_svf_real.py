"""Transformer² on a real instruct model: `python -m benchmarks svf --model DIR [--steps N] [--work DIR]`.

For each chat domain of `training.svf_chat_tasks` (the larger or smaller of two numbers, the first or last
letter of a word, review sentiment), on SmolLM2-135M-Instruct or any Llama-family chat checkpoint with a chat template:

1. the base model's accuracy on 256 held-out test questions (greedy, strict checker);
2. one SVF expert per domain by greedy REINFORCE with the KL penalty through `training.svf train`, and the
   LoRA baseline (`--method lora`, rank 8, the same matrices, reward, rollouts, batch and step budget);
3. the three adaptation strategies over the three experts: prompt-based routing (the base model names the
   question's kind as \\boxed{kind}), classifier-based (a softmax head on the base model's pooled hidden
   states) and few-shot CEM over per-matrix mixing coefficients;
4. the experts applied to transformers' model of the same checkpoint (`interop.svf_torch.apply_expert`),
   its greedy `generate` scored with the same checker on the same test questions.

Writes svf-real.md / .json / .png (accuracy per strategy and domain with standard errors as bars, and the RL
curves). Trained runs are reused from --work (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from jaxmodels import from_pretrained, lora
from jaxmodels.curves import read_metrics
from jaxmodels.svf import HiddenStateClassifier, SVFWrapper, parse_boxed, select_matrices
from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import markdown_table, write_results
from jaxmodels_interop.tokenizer import HFTokenizer
from jaxmodels_training import svf as svf_cli
from jaxmodels_training.svf_adapt import Adapter
from jaxmodels_training.svf_chat_tasks import DOMAINS, SYSTEM, classification_messages, get_domain, split, strict_match
from jaxmodels_training.svf_rl import PromptCodec, fixed_batches, rollout_with
from jaxmodels_training.svf_tasks import Example

N_TRAIN, N_VALID, N_TEST, SHOTS = 256, 32, 256, 8
MAX_NEW = 8
RL = dict(algo="reinforce", batch_size=8, lr=1e-2, grad_clip=1e-3, kl_coef=0.05, eval_every=5, patience=3)
OFFICIAL = dict(algo="reinforce (greedy rollouts)", batch_size=256, lr=2e-3, grad_clip=1e-3, kl_coef=0.0,
                eval_every=10, iterations=200)
LORA = dict(rank=8, lr=1e-3)
CEM = dict(iterations=2, pop_size=32, num_elites=6)
PPO = dict(domain="numbers", batch_size=4, group_size=2, temperature=1.0, epochs=2)  # 8 sampled rollouts per step
STRATEGIES = ("base", "lora", "expert", "prompt", "classifier", "few-shot")
LABEL_OF = {"numbers": "math", "letters": "spelling", "sentiment": "review"}  # the names routing asks for


def stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def train_run(model_dir: Path, work: Path, domain: str, method: str, steps: int, *, name: str | None = None,
              algo: list[str] | None = None, batch_size: int = RL["batch_size"]) -> dict:
    out = work / (name or f"{method}-{domain}")
    lr = LORA["lr"] if method == "lora" else RL["lr"]
    argv = ["--model", str(model_dir), "--tokenizer", str(model_dir), "--task", domain, "--method", method,
            "--lora-rank", str(LORA["rank"]), *(algo or ["--algo", RL["algo"]]), "--steps", str(steps),
            "--batch-size", str(batch_size), "--lr", str(lr), "--grad-clip", str(RL["grad_clip"]),
            "--kl-coef", str(RL["kl_coef"]), "--n-train", str(N_TRAIN), "--n-valid", str(N_VALID),
            "--eval-every", str(RL["eval_every"]), "--patience", str(RL["patience"]),
            "--max-new-tokens", str(MAX_NEW), "--svd-cache", str(work / "svd"), "--out", str(out)]
    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("argv") == argv:
        return json.loads(summary.read_text())
    parser = argparse.ArgumentParser()
    svf_cli.add_train_args(parser)
    t0 = time.perf_counter()
    result = svf_cli.train(parser.parse_args([*argv, "--force"]))
    result.update(argv=argv, wall_s=time.perf_counter() - t0, method=method, domain=domain,
                  s_per_step=1.0 / result["steps_per_s"] if result["steps_per_s"] else None)
    summary.write_text(json.dumps(result, indent=2))
    return result


def curves(run_dir: Path) -> dict:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return {"train": [(r["step"], r["reward"]) for r in rows if r["split"] == "train"],
            "valid": [(r["step"], r["accuracy"]) for r in rows if r["split"] == "valid"]}


def prompt_routes(adapter: Adapter, tokenizer, examples: list[Example]) -> list[str]:
    """The base model names each question's kind; a reply without a known \\boxed{kind} is "others"."""
    labels = [LABEL_OF[d] for d in DOMAINS]
    demo = []
    for d in DOMAINS:  # one demonstration per kind, outside every split
        q = get_domain(d).demonstration()[0]
        demo += classification_messages(q, labels)[1:] + [{"role": "assistant", "content": f"\\boxed{{{LABEL_OF[d]}}}"}]
    asks = [Example(tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, *demo,
                                                   *classification_messages(e.question, labels)[1:]],
                                                  tokenize=False, add_generation_prompt=True), "", e.domain)
            for e in examples]
    codec = PromptCodec.for_examples(tokenizer, asks, 12)
    routes = []
    back = {v: k for k, v in LABEL_OF.items()}
    for chunk, n in fixed_batches(asks, adapter.batch_size):
        out = rollout_with(adapter.base, chunk, codec, lambda c, a: 0.0)
        routes += [back.get(parse_boxed(t, labels), "others") for t in out.completions[:n]]
    return routes


def routed(adapter: Adapter, examples, routes) -> dict[str, float]:
    per = {}
    for d in DOMAINS:
        idx = [i for i, e in enumerate(examples) if e.domain == d]
        per[d] = adapter.routed_accuracy([examples[i] for i in idx], [routes[i] for i in idx])
    return per


def torch_accuracy(model_dir: Path, experts: dict[str, str], tests: dict[str, list[Example]],
                   ours: dict[str, list[str]]) -> dict:
    """Each expert applied to transformers' model; greedy generate on that domain's test prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jaxmodels_interop.svf_torch import apply_expert, restore_weights

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    newline = tok.encode("\n", add_special_tokens=False)
    stops = [newline[0] if len(newline) == 1 else tok.eos_token_id, tok.eos_token_id]  # as PromptCodec.stop_ids
    out = {}
    for d, path in experts.items():
        originals = apply_expert(model, path)
        texts = []
        for i in range(0, len(tests[d]), 32):
            batch = tok([e.prompt for e in tests[d][i:i + 32]], return_tensors="pt", padding=True,
                        add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=stops,
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
            for row in gen[:, batch["input_ids"].shape[1]:]:
                ids = row.tolist()
                cut = next((j for j, t in enumerate(ids) if t in stops), len(ids))
                texts.append(tok.decode(ids[:cut], skip_special_tokens=True))
        restore_weights(model, originals)
        acc = float(np.mean([strict_match(t, e.answer) > 0 for t, e in zip(texts, tests[d])]))
        same = float(np.mean([a.strip() == b.strip() for a, b in zip(texts, ours[d])]))
        out[d] = {"accuracy": acc, "same_replies": same}
    return out


def replies(model, examples, codec, batch_size) -> list[str]:
    texts = []
    for chunk, n in fixed_batches(examples, batch_size):
        texts += rollout_with(model, chunk, codec, strict_match).completions[:n]
    return texts


def evaluate(model_dir: Path, model, tokenizer, adapter: Adapter, runs: dict, data: dict, tests: dict) -> dict:
    """Every strategy on every domain's test questions (and the experts' replies, for the transformers check)."""
    acc: dict[str, dict[str, float]] = {d: {} for d in DOMAINS}
    ours_replies = {}
    t0 = time.perf_counter()
    for d in DOMAINS:
        acc[d]["base"] = adapter.accuracy(adapter.base, tests[d])
        ours_replies[d] = replies(adapter.model(d), tests[d], adapter.codec, adapter.batch_size)
        acc[d]["expert"] = float(np.mean([strict_match(t, e.answer) > 0 for t, e in zip(ours_replies[d], tests[d])]))
        adapters, config = lora.load(runs["lora", d]["expert"], model)
        acc[d]["lora"] = adapter.accuracy(lora.merge(model, adapters, config), tests[d])
    eval_s = time.perf_counter() - t0
    mixed = [e for d in DOMAINS for e in tests[d]]
    t0 = time.perf_counter()
    routes = prompt_routes(adapter, tokenizer, mixed)
    routing = {"prompt": float(np.mean([r == e.domain for r, e in zip(routes, mixed)]))}
    for d, a in routed(adapter, mixed, routes).items():
        acc[d]["prompt"] = a
    train_feats = adapter.features([e for d in DOMAINS for e in data[d][0][:64]])
    clf = HiddenStateClassifier.fit(train_feats, [d for d in DOMAINS for _ in range(64)], seed=0)
    routes_c = clf.predict(adapter.features(mixed))
    routing["classifier"] = float(np.mean([r == e.domain for r, e in zip(routes_c, mixed)]))
    for d, a in routed(adapter, mixed, routes_c).items():
        acc[d]["classifier"] = a
    route_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cem = {}
    for d in DOMAINS:
        acc[d]["few-shot"], result = adapter.few_shot(data[d][1][:SHOTS], tests[d], seed=0, **CEM)
        cem[d] = {"score": result.score, "loglik": result.loglik, "history": result.history}
    cem_s = time.perf_counter() - t0
    return {"acc": acc, "routing": routing, "cem": cem, "replies": ours_replies,
            "timing_s": {"adapt_eval": eval_s, "routing": route_s, "cem": cem_s}}


def run(args) -> None:
    model_dir, work = Path(args.model), Path(args.work) / "real"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tokenizer = HFTokenizer(model_dir)
    data = {d: split(tokenizer, d, n_train=N_TRAIN, n_valid=N_VALID, n_test=N_TEST, seed=0) for d in DOMAINS}
    tests = {d: data[d][2] for d in DOMAINS}
    runs = {(m, d): train_run(model_dir, work, d, m, args.steps) for d in DOMAINS for m in ("svf", "lora")}
    model = from_pretrained(model_dir)
    wrapper = SVFWrapper(model, cache_dir=work / "svd")
    experts = {d: wrapper.load(runs["svf", d]["expert"], set_current=False) for d in DOMAINS}
    prompts = [e for d in DOMAINS for e in data[d][0] + data[d][1] + data[d][2]]
    prompt_len = max(len(tokenizer.encode(e.prompt)) for e in prompts)
    adapter = Adapter(wrapper, tokenizer, experts, max_new_tokens=MAX_NEW, batch_size=32, prompt_len=prompt_len,
                      reward=strict_match)
    key = {f"{m}-{d}": runs[m, d]["argv"] for (m, d) in runs}
    cached = work / "eval.json"
    if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
        ev = json.loads(cached.read_text())
    else:
        ev = evaluate(model_dir, model, tokenizer, adapter, runs, data, tests)
        cached.write_text(json.dumps({"key": key, **ev}))
    acc, routing, cem = ev["acc"], ev["routing"], ev["cem"]
    if "replies" not in ev:  # an evaluation cached without the experts' replies
        ev["replies"] = {d: replies(adapter.model(d), tests[d], adapter.codec, adapter.batch_size) for d in DOMAINS}
    t0 = time.perf_counter()
    torch_check = torch_accuracy(model_dir, {d: runs["svf", d]["expert"] for d in DOMAINS}, tests, ev["replies"])
    torch_s = time.perf_counter() - t0
    ppo = train_run(model_dir, work, PPO["domain"], "svf", args.steps, name=f"ppo-{PPO['domain']}",
                    algo=["--algo", "ppo", "--group-size", str(PPO["group_size"]), "--temperature",
                          str(PPO["temperature"]), "--ppo-epochs", str(PPO["epochs"])], batch_size=PPO["batch_size"])
    ppo_test = adapter.accuracy(wrapper.patch_weights(wrapper.load(ppo["expert"], set_current=False)),
                                tests[PPO["domain"]])
    rows = []
    for d in DOMAINS:
        rows.append({"domain": d, **{s: f"{acc[d][s]:.3f} ± {stderr(acc[d][s], N_TEST):.3f}" for s in STRATEGIES}})
    means = {s: float(np.mean([acc[d][s] for d in DOMAINS])) for s in STRATEGIES}
    rows.append({"domain": "mean", **{s: f"{means[s]:.3f} ± {stderr(means[s], 3 * N_TEST):.3f}" for s in STRATEGIES}})
    z_count = sum(m.rank for m in select_matrices(model))
    lora_count = sum(LORA["rank"] * (m.flat_shape[0] + m.flat_shape[1]) for m in select_matrices(model))
    rl_rows = [{"domain": d, "method": m, "steps": runs[m, d]["steps_done"], "best valid": runs[m, d]["best_valid"],
                "best step": runs[m, d]["best_step"], "s per RL step": round(runs[m, d]["s_per_step"] or 0, 2),
                "wall s": round(runs[m, d]["wall_s"])} for d in DOMAINS for m in ("svf", "lora")]
    rl_rows.append({"domain": PPO["domain"], "method": "svf, PPO", "steps": ppo["steps_done"],
                    "best valid": ppo["best_valid"], "best step": ppo["best_step"],
                    "s per RL step": round(ppo["s_per_step"] or 0, 2), "wall s": round(ppo["wall_s"])})
    wins = {d: (acc[d]["expert"] - acc[d]["base"]) / math.hypot(stderr(acc[d]["expert"], N_TEST),
                                                                stderr(acc[d]["base"], N_TEST)) for d in DOMAINS}
    results = {"accuracy": acc, "routing_accuracy": routing, "torch": torch_check, "cem": cem,
               "curves": {f"{m}-{d}": curves(work / f"{m}-{d}") for d in DOMAINS for m in ("svf", "lora")},
               "rl": rl_rows, "settings": {"rl": RL, "official": OFFICIAL, "lora": LORA, "cem": CEM,
                                           "n_train": N_TRAIN, "n_valid": N_VALID, "n_test": N_TEST,
                                           "shots": SHOTS, "max_new_tokens": MAX_NEW, "steps": args.steps},
               "params": {"svf": z_count, "lora": lora_count}, "expert_minus_base_in_se": wins,
               "ppo": {**PPO, "steps": ppo["steps_done"], "best_valid": ppo["best_valid"],
                       "best_step": ppo["best_step"], "s_per_step": ppo["s_per_step"], "test": ppo_test},
               "timing_s": {**ev["timing_s"], "torch": torch_s,
                            "total (this run, cached stages reused)": time.perf_counter() - t_start},
               "model": str(model_dir)}
    notes = notes_for(results)
    write_results("svf-real", results, rows, notes=notes, columns=["domain", *STRATEGIES], chart=chart)


def notes_for(r: dict) -> str:
    s = r["settings"]
    torch_rows = [{"domain": d, "ours (JAX) expert": r["accuracy"][d]["expert"], "transformers + expert":
                   v["accuracy"], "same replies": v["same_replies"]} for d, v in r["torch"].items()]
    return "\n\n".join([
        f"Accuracy ± standard error on {s['n_test']} held-out test questions per domain (greedy, {s['max_new_tokens']}"
        " new tokens, the strict checker of `training.svf_chat_tasks`); train, validation and test questions are "
        "disjoint. Expert minus base, in standard errors of the difference: "
        + ", ".join(f"{d} {v:+.1f}" for d, v in r["expert_minus_base_in_se"].items()) + ".",
        f"RL: greedy REINFORCE with KL(ref‖π) (`training.svf train`), {s['rl']['batch_size']} prompts per step, at "
        f"most {s['steps']} steps, lr {s['rl']['lr']} (SVF) / {s['lora']['lr']} (LoRA rank {s['lora']['rank']}), "
        f"gradient clip {s['rl']['grad_clip']}, KL coefficient {s['rl']['kl_coef']}, validation on {s['n_valid']} "
        f"questions every {s['rl']['eval_every']} steps, the best validation state kept. The official settings: "
        f"{s['official']}. Trained parameters: SVF {r['params']['svf']:,}, LoRA {r['params']['lora']:,}.\n\n"
        + markdown_table(r["rl"]),
        f"PPO (`--algo ppo`, {r['ppo']['batch_size']} prompts x {r['ppo']['group_size']} samples at temperature "
        f"{r['ppo']['temperature']}, {r['ppo']['epochs']} epochs per batch, group-normalised advantages, the same lr "
        f"and KL) on {r['ppo']['domain']}: test accuracy {r['ppo']['test']:.3f} ± "
        f"{stderr(r['ppo']['test'], s['n_test']):.3f} (REINFORCE's expert: "
        f"{r['accuracy'][r['ppo']['domain']]['expert']:.3f}).",
        f"Routing accuracy (the right domain): {r['routing_accuracy']}. Few-shot: CEM {s['cem']} on {s['shots']} "
        f"validation questions per domain.",
        "The SVF experts applied to transformers' model of the same checkpoint (`interop.svf_torch`), greedy "
        "generate on the same test questions:\n\n" + markdown_table(torch_rows),
        f"Wall time (s): {({k: round(v) for k, v in r['timing_s'].items()})}."])


def chart(rows: list[dict], results: dict):
    acc = results["accuracy"]
    domains = list(acc)
    n = results["settings"]["n_test"]
    fig, (ax, ax2) = figure(2, width=7.0, height=4.2)
    grouped_bars(ax, domains, {s: [acc[d][s] for d in domains] for s in STRATEGIES},
                 errors={s: [stderr(acc[d][s], n) for d in domains] for s in STRATEGIES})
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("Transformer² on SmolLM2-135M-Instruct")
    for name, c in results["curves"].items():
        if c["valid"]:
            steps, values = zip(*c["valid"])
            ax2.plot(steps, values, marker="o", linestyle="-" if name.startswith("svf") else "--", label=name)
    ax2.set_xlabel("RL step")
    ax2.set_ylabel("validation accuracy")
    ax2.legend(fontsize=7)
    ax2.set_title("RL training curves")
    fig.tight_layout()
    return fig
