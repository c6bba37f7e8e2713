"""`python -m benchmarks finetune --model DIR`: full fine-tuning throughput of a real checkpoint, ours (JAX)
against transformers (PyTorch eager), per dtype, with each side's peak memory.

    python -m benchmarks finetune --model DIR [--batch 4] [--seq-len 256] [--runs 5]
                                  [--dtypes float32,bfloat16] [--remat float32] [--memory-steps 2]

A step is forward + backward + global-norm clipping + AdamW on every parameter, the same recipe on both sides
(benchmarks/suites/_finetune_sides.py), on the same batch of random token ids [B, T].

* Speed, in this process: per case (a dtype, with or without activation checkpointing) both sides load fresh
  weights, take a first step (its loss is the loss at the loaded weights: the two must agree), then their steps
  are timed alternately (harness.time_alternating, each call started once the other framework's threads are
  quiet), medians. tokens/s = B T / step time. Without checkpointing the step's parts are timed in the same
  rounds: the forward alone (the loss) and forward + backward (ours `jax.value_and_grad`, jitted; theirs
  `loss.backward()`); backward = their difference, optimizer (clipping + AdamW) = step - (forward + backward).
* Memory: each side and case runs again in a process of its own (_finetune_sides.memory_run), so each peak
  resident set (VmHWM) is one framework's: over loading, compiling and the first step, then over `--memory-steps`
  more steps. Reported: the process's peak, and in the notes the RSS of the imports alone.
* Matmul library: the step's MLP up-projection products ([BT, D] x [D, F] and the weight gradient's
  [D, BT] x [BT, F]) alone, XLA and torch, per dtype, alternating: what each side's dots run at here.
* FLOPs, analytic (matmuls and attention, multiply-adds x 2): N = L (D (Nq + 2 Nkv) H + Nq H D + 3 D F) + D V
  matmul parameters, a training step = 3 x forward = 6 N (B T) + 12 L B T^2 Nq H.

Writes benchmarks/results/finetune.{json,md,png}. Needs a model: `all` skips it.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import time_alternating, write_results
from jaxmodels_benchmarks.suites import _finetune_sides as sides

IN_ALL = False  # needs --model
DTYPES = ("float32", "bfloat16")
LOSS_RTOL = 1e-4  # float32 step-0 losses must agree within this
OURS, THEIRS = "ours", "transformers"
PARTS = ("forward", "forward+backward", "step")
MIB = 2 ** 20


def _dtypes(text: str) -> list[str]:
    names = [d for d in text.split(",") if d]
    for d in names:
        if d not in DTYPES:
            raise argparse.ArgumentTypeError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face causal LM directory (float32)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--runs", type=int, default=5, help="timed steps per side and case (default 5)")
    p.add_argument("--dtypes", type=_dtypes, default=list(DTYPES), help="comma-separated (default float32,bfloat16)")
    p.add_argument("--remat", type=_dtypes, default=["float32"],
                   help="dtypes also run with activation checkpointing on both sides (default float32; '' none)")
    p.add_argument("--memory-steps", type=int, default=2, help="steps after the first in each memory process")
    args = p.parse_args(argv)
    for name in ("batch", "seq_len", "runs", "memory_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def flops_per_step(config: dict, batch: int, seq_len: int) -> float:
    """Analytic FLOPs of one training step (formula in the module docstring)."""
    d, f, v, layers = (config[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers"))
    nq, nkv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    h = config.get("head_dim") or d // nq
    n = layers * (d * (nq + 2 * nkv) * h + nq * h * d + 3 * d * f) + d * v
    return 6.0 * n * batch * seq_len + 12.0 * layers * batch * seq_len ** 2 * nq * h


def matmul_rates(tokens: int, d: int, f: int, dtypes: list[str], runs: int) -> dict[str, float]:
    """GFLOP/s of the step's MLP up-projection products, XLA (jitted) and torch, per dtype, alternating: the
    forward x @ W ([BT, D] x [D, F]) and the weight gradient x^T dy ([D, BT] x [BT, F], contracting over tokens)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(shape, dtype=np.float32) for shape in ((tokens, d), (d, f), (tokens, f)))
    forward, weight_grad = jax.jit(lambda a, b: a @ b), jax.jit(lambda a, b: a.T @ b)
    fns = {}
    for dtype in dtypes:
        jx, jw, jdy = (jnp.asarray(a, dtype) for a in (x, w, dy))
        tx, tw, tdy = (torch.from_numpy(a).to(getattr(torch, dtype)) for a in (x, w, dy))
        fns |= {f"xla {dtype} x @ W": partial(forward, jx, jw), f"torch {dtype} x @ W": partial(torch.matmul, tx, tw),
                f"xla {dtype} x^T dy": partial(weight_grad, jx, jdy),
                f"torch {dtype} x^T dy": partial(torch.matmul, tx.T, tdy)}
    times = time_alternating(fns, runs=runs)
    return {name: 2 * tokens * d * f / t["median"] / 1e9 for name, t in times.items()}


def speed(args, dtype: str, remat: bool, ids) -> dict:
    """One case in this process: first-step losses, compile time, then step (and part) times, alternating."""
    from jaxmodels_benchmarks.suites.hyformer import OtherLoad

    built = {OURS: sides.ours_side(args.model, dtype, ids, remat=remat),
             THEIRS: sides.theirs_side(args.model, dtype, ids, remat=remat)}
    parts = ("step",) if remat else PARTS
    fns = {f"{who} {part}": built[who][part] for part in parts for who in built}
    with OtherLoad() as load:
        times = time_alternating(fns, warmup=1, runs=args.runs)
    out = {who: {"first_loss": s["first_loss"], "first_step_s": s["first_step_s"], "compile_s": s["compile_s"],
                 "times": {part: times[f"{who} {part}"] for part in parts}} for who, s in built.items()}
    out[OURS].update({k: built[OURS][k] for k in ("compiled_temp_bytes", "compiled_argument_bytes")})
    out["others_cpu_share"] = load.share
    return out


def memory(args, dtype: str, remat: bool, vocab: int) -> dict:
    """Each side's training memory, measured in a process of its own."""
    out = {}
    for who, side in ((OURS, "ours"), (THEIRS, "theirs")):
        cmd = [sys.executable, "-m", "jaxmodels_benchmarks.suites._finetune_sides", "--side", side, "--model",
               args.model, "--dtype", dtype, "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--vocab",
               str(vocab), "--steps", str(args.memory_steps)] + (["--remat"] if remat else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"{who} {dtype}: the memory process failed:\n{proc.stderr[-3000:]}")
        out[who] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def case_name(dtype: str, remat: bool) -> str:
    return f"{dtype} + remat" if remat else dtype


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    config = json.loads((Path(args.model) / "config.json").read_text())
    ids = sides.batch_ids(config["vocab_size"], args.batch, args.seq_len)
    tokens, flops = args.batch * args.seq_len, flops_per_step(config, args.batch, args.seq_len)
    cases = [(d, False) for d in args.dtypes] + [(d, True) for d in args.remat]
    results = {"config": {"model": args.model, "batch": args.batch, "seq_len": args.seq_len, "runs": args.runs,
                          "lr": sides.LR, "weight_decay": sides.WEIGHT_DECAY, "grad_clip": sides.GRAD_CLIP,
                          "betas": sides.BETAS, "torch_threads": sides.THREADS, "memory_steps": args.memory_steps},
               "flops_per_step": flops, "cases": {}}
    for dtype, remat in cases:
        name = case_name(dtype, remat)
        print(f"finetune {name}: speed", flush=True)
        results["cases"][name] = r = speed(args, dtype, remat, ids)
        print(f"  step-0 loss ours {r[OURS]['first_loss']:.6f} transformers {r[THEIRS]['first_loss']:.6f}; step s "
              f"ours {r[OURS]['times']['step']['median']:.2f} transformers {r[THEIRS]['times']['step']['median']:.2f}",
              flush=True)
        gc.collect()  # this case's models and optimizer states go before the next case loads
    shape = [tokens, config["hidden_size"], config["intermediate_size"]]
    results["matmul"] = {"shape": shape, "gflops": matmul_rates(*shape, args.dtypes, max(7, args.runs))}
    for dtype, remat in cases:
        print(f"finetune {case_name(dtype, remat)}: memory", flush=True)
        results["cases"][case_name(dtype, remat)]["memory"] = memory(args, dtype, remat, config["vocab_size"])
    rows = [_row(name, r, tokens) for name, r in results["cases"].items()]
    write_results("finetune", results, rows, notes=_notes(args, results, tokens, flops), chart=chart)


def _row(name: str, r: dict, tokens: int) -> dict:
    step = {who: r[who]["times"]["step"]["median"] for who in (OURS, THEIRS)}
    loss = {who: r[who]["first_loss"] for who in (OURS, THEIRS)}
    return {"case": name, "ours tok/s": tokens / step[OURS], "transformers tok/s": tokens / step[THEIRS],
            "ours / transformers": step[THEIRS] / step[OURS], "ours step s": step[OURS],
            "transformers step s": step[THEIRS], "ours compile s": r[OURS]["compile_s"],
            "ours peak MiB": r["memory"][OURS]["peak_bytes"] / MIB,
            "transformers peak MiB": r["memory"][THEIRS]["peak_bytes"] / MIB,
            "ours step-0 loss": f"{loss[OURS]:.6f}", "transformers step-0 loss": f"{loss[THEIRS]:.6f}",
            "loss rel diff": abs(loss[OURS] - loss[THEIRS]) / abs(loss[THEIRS]),
            "others' CPU %": None if r["others_cpu_share"] is None else round(100 * r["others_cpu_share"])}


def _notes(args, results: dict, tokens: int, flops: float) -> str:
    from jaxmodels.tables import markdown_table

    cases = results["cases"]
    f32 = [(n, r) for n, r in cases.items() if n.startswith("float32")]
    agree = all(abs(r[OURS]["first_loss"] - r[THEIRS]["first_loss"]) <= LOSS_RTOL * abs(r[THEIRS]["first_loss"])
                for _, r in f32)
    parts, mem = [], []
    for name, r in cases.items():
        for who in (OURS, THEIRS):
            t = {k: v["median"] for k, v in r[who]["times"].items()}
            if "forward" in t:
                parts.append({"case": name, "impl": who, "forward s": t["forward"],
                              "backward s": t["forward+backward"] - t["forward"],
                              "optimizer s": t["step"] - t["forward+backward"], "step s": t["step"],
                              "GFLOP/s": flops / t["step"] / 1e9})
            m = r["memory"][who]
            mem.append({"case": name, "impl": who, "imports MiB": m["imports_bytes"] / MIB,
                        "peak: load, compile, step 1 MiB": m["setup_peak_bytes"] / MIB,
                        f"peak: steps 2-{m['steps'] + 1} MiB": m["training_peak_bytes"] / MIB,
                        "process peak MiB": m["peak_bytes"] / MIB,
                        "XLA temp MiB": r[who]["compiled_temp_bytes"] / MIB if who == OURS else "",
                        "step-0 loss (own process)": f"{m['first_loss']:.6f}"})
    leaks = [f"{n} {w}" for n, r in cases.items() for w in (OURS, THEIRS) if r["memory"][w]["other_framework_loaded"]]
    busy = [round(100 * r["others_cpu_share"]) for r in cases.values() if r["others_cpu_share"] is not None]
    notes = [
        f"Model {args.model}; batch {args.batch} x {args.seq_len} random token ids; {args.runs} timed steps per side "
        f"and case, medians, alternating in one process; tokens/s = B T / step. Step: shifted next-token CE, "
        f"global-norm clipping at {sides.GRAD_CLIP}, AdamW lr {sides.LR} (constant), betas {sides.BETAS}, eps 1e-8, "
        f"weight decay {sides.WEIGHT_DECAY} on matrices only. `ours / transformers` > 1: ours is faster. Analytic "
        f"{flops / 1e9:.0f} GFLOP per step.",
        "**float32**: both in float32. **bfloat16** (the same mixed-precision recipe, float32 master weights and "
        "AdamW state on both sides): ours is `make_train_step(compute_dtype=bfloat16)`, which casts every float "
        "parameter (norm weights too) to bfloat16 and runs the whole forward and backward in bfloat16, "
        "activations and residual stream included, with the logits upcast to float32 for the loss; transformers "
        "runs its forward under `torch.autocast(\"cpu\", dtype=torch.bfloat16)`, which computes autocast's "
        "lower-precision ops (linear, matmul, bmm, scaled_dot_product_attention) in bfloat16 from per-call "
        "bfloat16 copies of the float32 weights and leaves the rest in float32 (the embedding and so the residual "
        "stream, RMSNorm, which upcasts itself, and the loss). So bf16 step-0 losses differ by more than float32's. "
        "**+ remat**: activation checkpointing on both sides, ours `model.use_remat(True)` (each decoder block "
        "recomputed in the backward), transformers `activation_checkpointing_enable` (each decoder layer in a "
        "non-reentrant `torch.utils.checkpoint`).",
        f"Step-0 loss (the first step's, at the loaded weights, same batch): float32 rows "
        + ("agree" if agree else "**DISAGREE**") + f" within {LOSS_RTOL:g} relative. Our compile (ahead of time, "
        "`jit(...).lower(...).compile()`) is `ours compile s`; transformers runs eager (no compile). First step "
        "(s, after the compile): " + "; ".join(f"{n}: ours {r[OURS]['first_step_s']:.1f}, transformers "
                                               f"{r[THEIRS]['first_step_s']:.1f}" for n, r in cases.items()) + ".",
        "Where the time goes (same alternating rounds; backward = (forward + backward) - forward, optimizer = "
        "clipping + AdamW = step - (forward + backward); transformers' forward records autograd's graph as in its "
        "step, ours is the jitted loss alone; differences of medians, so a part near 0 is within the noise: an "
        "optimizer below 0 says only that ours is too small to see, XLA fusing it into the step):\n\n"
        + markdown_table(parts),
        "The matmul library under each side, on this step's MLP up-projection shapes, timed alternately in this "
        "process (GFLOP/s; x [BT, D], W [D, F], dy [BT, F] with BT, D, F = {}, {}, {}): ".format(
            *results["matmul"]["shape"]) + ", ".join(f"{k} {v:.0f}" for k, v in results["matmul"]["gflops"].items())
        + ".",
        "Memory: each side and case in a process of its own, resident set from /proc/self/status. `imports`: RSS "
        "after importing the framework; then the peak (VmHWM) over loading the model, compiling (ours) and the "
        "first step; VmHWM reset, then the peak over the next steps; `process peak` (the table's) is the larger. "
        "`XLA temp`: the compiled step's temporary buffers (memory_analysis). The step-0 loss of each memory "
        "process repeats this process's.\n\n" + markdown_table(mem),
    ]
    for name, r in cases.items():
        plain = cases.get(name.removesuffix(" + remat")) if name.endswith(" + remat") else None
        if plain is not None:
            notes.append(f"Activation checkpointing ({name} against {name.removesuffix(' + remat')}): " + "; ".join(
                f"{who} step x{r[who]['times']['step']['median'] / plain[who]['times']['step']['median']:.2f}, "
                f"process peak {(r['memory'][who]['peak_bytes'] - plain['memory'][who]['peak_bytes']) / MIB:+.0f} MiB"
                for who in (OURS, THEIRS)) + f"; our compiled step's XLA temp "
                f"{(r[OURS]['compiled_temp_bytes'] - plain[OURS]['compiled_temp_bytes']) / MIB:+.0f} MiB.")
    if leaks:
        notes.append("The other framework was imported in the memory process of: " + ", ".join(leaks) + ".")
    if busy:
        notes.append(f"`others' CPU %`: the share of the machine's CPU that other processes used during a case's "
                     f"timed rounds ({min(busy)}-{max(busy)}% in this run). Alternation shares that noise between "
                     "the sides, but not evenly: PyTorch's OpenMP threads slow down far more than XLA's when they "
                     "lose their cores, so a busy case's ratio flatters ours; read the quiet cases.")
    return "\n\n".join(notes)


def chart(rows: list[dict], results: dict):
    fig, (speed_ax, mem_ax) = figure(2, width=5.5)
    for ax, key, label in ((speed_ax, "tok/s", "training tokens/s"), (mem_ax, "peak MiB", "peak RSS (MiB)")):
        grouped_bars(ax, [r["case"] for r in rows], {OURS: [r[f"ours {key}"] for r in rows],
                                                     THEIRS: [r[f"transformers {key}"] for r in rows]})
        ax.set_ylabel(label)
        ax.set_ylim(top=1.25 * max(max(r[f"ours {key}"], r[f"transformers {key}"]) for r in rows))
        ax.legend(loc="upper center", ncols=2)
    for i, r in enumerate(rows):
        speed_ax.annotate(f"{r['ours / transformers']:.2f}x", (i - 0.2, r["ours tok/s"]), ha="center", va="bottom")
    speed_ax.set_title("Full fine-tuning step, ours / transformers (higher is better)")
    mem_ax.set_title("Peak memory, one process each (lower is better)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
