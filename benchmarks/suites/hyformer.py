"""Hyformer training step and forward pass: ours (JAX) against transformers' LlamaForCausalLM (PyTorch).

    python -m benchmarks hyformer [--quick] [--runs N] [--vocab V] [--no-compile] [--no-bf16] [--no-plain]
                                  [--no-floor]

Both sides get the same configuration and the same batch: d 256, 4 layers, 8 heads, T 128, B 8, SwiGLU of
width 4*D with biases, embedding tied to the output head. The training step is forward + backward + global-norm
clipping + AdamW on both sides: ours is `training.step.make_train_step` with `training.optim.make_optimizer`
and the Hyformer `lm` loss. PyTorch's is eager, with `torch.optim.AdamW` as constructed by default (on the CPU
it updates one tensor at a time) and with `fused=True` (its fastest CPU AdamW), and `torch.compile`d (with the
fused AdamW) when that works here. Every comparison is timed in this one process, alternating run by run,
medians; each call starts once the previous call's leftover thread work is done (`benchmarks.harness.settle`:
PyTorch's OpenMP threads spin for a few ms after a call, which would otherwise land in our next call).

FLOPs are counted analytically (multiply-adds x 2, matmuls and attention only; norms, RoPE, softmax and the
optimizer are left out):
    N = L * (4 D^2 + 3 D F) + D V            matmul parameters (q, k, v, o; gate, up, down; tied LM head)
    forward  = 2 N (B T) + 4 L B T^2 D       (QK^T and PV over the full T x T score matrix)
    training = 3 * forward = 6 N (B T) + 12 L B T^2 D   (backward = 2 x forward)
The peak is this CPU's fp32 matmul rate, measured in the same run on a 2048 x 2048 product in numpy, XLA
and PyTorch; "% of peak" is against the best of the three.

Ours runs in both layer paths (docs/layers.md): "tuned", what the CPU gets by default (custom VJPs, the
heads-major attention core), and "plain" (`use_layers("plain")`: einsum projections differentiated by JAX,
`jax.nn.dot_product_attention`), what every other backend gets; the plain row says what the tuned path buys here.

The floor row runs every dot of our compiled step (and forward) alone, same shapes and dimension numbers, in
one jitted function: how long XLA:CPU's matmuls take with no other kernel around them. The torch floor row runs
the same products in PyTorch: the same matmuls at its library's rate, the part of the gap that is the matmul
library's rather than the rest of the step's.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from jaxmodels_benchmarks.charts import figure, ratio_bars
from jaxmodels_benchmarks.harness import block, time_alternating, write_results
from jaxmodels_benchmarks.hlo_dots import DotSpec, dot_specs, dots_only, torch_dots
from jaxmodels import Hyformer, HyformerConfig
from jaxmodels_training.hyformer import loss_fn
from jaxmodels_training.optim import make_optimizer
from jaxmodels_training.step import make_train_step

D_MODEL, N_LAYERS, N_HEADS, SEQ_LEN, BATCH = 256, 4, 8, 128, 8
FFN = 4 * D_MODEL
LR, WEIGHT_DECAY, GRAD_CLIP, BETAS = 1e-3, 0.1, 1.0, (0.9, 0.95)
PEAK_N = 2048
BUSY_SHARE = 0.2  # above this share of the CPU used by other processes, the notes warn that they competed
OURS, PLAIN = "ours (tuned layers)", "ours (plain layers)"
FLOOR = "ours: its dots alone (XLA floor)"
TORCH_FLOOR = "torch: our dots alone (its matmuls)"
EAGER, EAGER_FUSED, COMPILED = "torch eager", "torch eager, fused AdamW", "torch compile, fused AdamW"
TWIN = "our PyTorch twin (same weights)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks hyformer", description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=260, help="vocabulary size (default 260: byte-level)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 21, --quick 5)")
    p.add_argument("--quick", action="store_true",
                   help="fewer runs, for a smoke test (results go to hyformer-quick.{json,md})")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for about a minute)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    p.add_argument("--no-plain", action="store_true", help="skip our model in the plain layer path")
    p.add_argument("--no-floor", action="store_true", help="skip the row of our compiled step's dots run alone")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 21
    if args.runs < 1:
        p.error(f"--runs must be positive, got {args.runs}")
    if args.vocab < 2:
        p.error(f"--vocab must be at least 2, got {args.vocab}")
    return args


def flop_counts(vocab: int) -> dict[str, float]:
    """Analytic FLOPs of one forward pass and one training step (formula in the module docstring)."""
    n = N_LAYERS * (4 * D_MODEL ** 2 + 3 * D_MODEL * FFN) + D_MODEL * vocab
    forward = 2 * n * BATCH * SEQ_LEN + 4 * N_LAYERS * BATCH * SEQ_LEN ** 2 * D_MODEL
    return {"matmul_params": n, "forward": float(forward), "train": 3.0 * forward}


class OtherLoad:
    """Share of this machine's CPU time used by other processes while the block ran (None off Linux).

    Timings here are shared with other processes; this says how much they competed during a measurement.
    From /proc/stat (all CPUs, busy ticks) minus this process's own CPU time.
    """

    def __enter__(self):
        self.start, self.share = self._snapshot(), None
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        if self.start and end and end[1] > self.start[1]:
            busy, total, own = (e - s for e, s in zip(end, self.start))
            self.share = min(1.0, max(0.0, (busy - own) / total))

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        own = os.times()
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks) - idle, sum(ticks), (own.user + own.system) * os.sysconf("SC_CLK_TCK")


def measure_peak(runs: int) -> dict[str, float]:
    """fp32 GFLOP/s of a [2048, 2048] x [2048, 2048] matmul in numpy, XLA and PyTorch, alternating."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    xla_dot = jax.jit(jnp.dot)
    times = time_alternating({"numpy": lambda: a @ b, "xla": lambda: xla_dot(ja, jb), "torch": lambda: ta @ tb},
                             runs=runs)
    return {name: 2 * PEAK_N ** 3 / t["median"] / 1e9 for name, t in times.items()}


def jax_side(vocab: int, ids: np.ndarray, compute_dtype=None, *, layers: str = "tuned", hlo: bool = False) -> dict:
    """Our jitted training step (state carried between calls, donated) and jitted forward (logits) in the
    `layers` path; with `hlo`, also their optimised HLO texts (side["hlo"]: {"train": ..., "forward": ...})."""
    config = HyformerConfig.small(vocab_size=vocab, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=N_HEADS,
                                  max_seq_len=SEQ_LEN)
    graphdef, params = nnx.split(Hyformer(config, rngs=nnx.Rngs(0)).use_layers(layers), nnx.Param)
    tx = make_optimizer(optax.constant_schedule(LR), weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, b1=BETAS[0],
                        b2=BETAS[1])
    loss = partial(loss_fn, task="lm", mask_id=0, vocab_size=vocab)
    step = make_train_step(graphdef, tx, loss, compute_dtype=compute_dtype)
    batch, key = jnp.asarray(ids), jax.random.key(0)
    state = {"params": params, "opt_state": jax.jit(tx.init)(params)}
    fwd_params = params if compute_dtype is None else jax.tree.map(lambda x: x.astype(compute_dtype), params)
    fwd_params = jax.tree.map(jnp.copy, fwd_params)  # the step donates `params`; the forward keeps its own

    def train():
        state["params"], state["opt_state"], metrics = step(state["params"], state["opt_state"], batch, key)
        return metrics["loss"]

    @jax.jit
    def logits(p, x):
        return nnx.merge(graphdef, p)(x, "lm").logits

    side = first_calls(train, lambda: logits(fwd_params, batch))
    if hlo:
        side["hlo"] = {"train": step.lower(state["params"], state["opt_state"], batch, key).compile().as_text(),
                       "forward": logits.lower(fwd_params, batch).compile().as_text()}
    return side


def dots_side(specs: dict[str, list[DotSpec]], library=dots_only) -> dict:
    """The dots of our compiled step and forward (`specs["train"]`, `specs["forward"]`, from
    `benchmarks.hlo_dots.dot_specs`), run alone by `library` (`dots_only`: XLA:CPU, `torch_dots`: PyTorch's
    matmul library): the floor the matmuls set under everything else."""
    side = {}
    for what, what_specs in specs.items():
        run, operands = library(what_specs)
        side[what] = partial(run, operands)
    return side


def first_calls(train, forward) -> dict:
    """A side's functions, with the first training loss and the time of each function's first call
    (which compiles, for the jitted and torch.compiled sides)."""
    t0 = time.perf_counter()
    first_loss = float(block(train()))
    train_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    block(forward())
    forward_compile = time.perf_counter() - t0
    return {"train": train, "forward": forward, "first_loss": first_loss,
            "compile_s": {"train": train_compile, "forward": forward_compile}}


def torch_functions(model, run, batch, *, fused_adamw: bool = False, autocast_bf16: bool = False) -> dict:
    """A training step (AdamW, clipped) and a no-grad forward of a PyTorch causal LM; times their first calls.

    `run` is the model or its torch.compile; AdamW is torch's default (one tensor at a time) or `fused_adamw`.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY,
                            fused=True if fused_adamw else None)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16)

    def train():
        with autocast():
            loss = run(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def forward():
        with torch.no_grad(), autocast():
            return run(input_ids=batch).logits

    return first_calls(train, forward)


def torch_side(vocab: int, ids: np.ndarray, *, compiled: bool, fused_adamw: bool, autocast_bf16: bool = False) -> dict:
    """transformers' LlamaForCausalLM of the same size: a training step and a no-grad forward."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                         num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS, max_position_embeddings=SEQ_LEN,
                         mlp_bias=True, attention_bias=False, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).train()
    run = torch.compile(model) if compiled else model
    return torch_functions(model, run, torch.from_numpy(ids).long(), fused_adamw=fused_adamw,
                           autocast_bf16=autocast_bf16)


def twin_side(vocab: int, ids: np.ndarray) -> dict:
    """Our PyTorch Hyformer twin (interop.hf_hyformer) holding exactly the weights of `jax_side`'s model,
    copied through the conversion key table; trained with torch's default AdamW like `torch eager`."""
    from jaxmodels_interop.hf_hyformer import HyformerConfig as TwinConfig
    from jaxmodels_interop.hf_hyformer import HyformerForCausalLM
    from jaxmodels.checkpoint import flat_params
    from jaxmodels.hf.tables import HYFORMER

    config = HyformerConfig.small(vocab_size=vocab, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=N_HEADS,
                                  max_seq_len=SEQ_LEN)
    flax_model = Hyformer(config, rngs=nnx.Rngs(0))
    model = HyformerForCausalLM(TwinConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"}))
    state = {}
    for key, value in flat_params(flax_model).items():
        name, transform = HYFORMER.to_hf(key)
        state[name] = torch.from_numpy(np.array(transform.to_hf(np.asarray(value)), order="C"))
    model.load_state_dict(state, strict=False)
    model.train()
    return torch_functions(model, model, torch.from_numpy(ids).long())


def compare(case: str, what: str, flops: float, peak: float, sides: dict[str, dict], runs: int) -> list[dict]:
    """Times sides[name][what] ("train" or "forward") alternating; one row per side, ratios against ours."""
    with OtherLoad() as load:
        times = time_alternating({name: side[what] for name, side in sides.items()}, runs=runs)
    ours = times[OURS]["median"]
    rows = []
    for name, t in times.items():
        gflops = flops / t["median"] / 1e9
        rows.append({"case": case, "impl": name, "median ms": 1e3 * t["median"], "min ms": 1e3 * t["min"],
                     "max ms": 1e3 * t["max"], "this / ours": t["median"] / ours, "GFLOP/s": gflops,
                     "% of peak": 100 * gflops / peak,
                     "others' CPU %": None if load.share is None else round(100 * load.share)})
    return rows


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    flops = flop_counts(args.vocab)
    ids = np.random.default_rng(0).integers(0, args.vocab, size=(BATCH, SEQ_LEN), dtype=np.int32)
    print(f"hyformer: d {D_MODEL}, {N_LAYERS} layers, {N_HEADS} heads, T {SEQ_LEN}, B {BATCH}, vocab {args.vocab}; "
          f"{flops['train'] / 1e9:.2f} GFLOP/step, {flops['forward'] / 1e9:.2f} GFLOP/forward", flush=True)

    with OtherLoad() as peak_load:
        peaks = measure_peak(max(3, args.runs // 3))
    peak = max(peaks.values())
    print("fp32 matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()), flush=True)

    notes: list[str] = []
    sides = {OURS: jax_side(args.vocab, ids, hlo=not args.no_floor),
             EAGER: torch_side(args.vocab, ids, compiled=False, fused_adamw=False),
             EAGER_FUSED: torch_side(args.vocab, ids, compiled=False, fused_adamw=True),
             TWIN: twin_side(args.vocab, ids)}
    if not args.no_compile:
        try:
            sides[COMPILED] = torch_side(args.vocab, ids, compiled=True, fused_adamw=True)
        except Exception as e:  # noqa: BLE001 - any dynamo/inductor failure means "not available on this CPU"
            notes.append(f"torch.compile skipped: it failed on this machine ({type(e).__name__}: {str(e)[:200]})")
    if not args.no_plain:
        sides[PLAIN] = jax_side(args.vocab, ids, layers="plain")
        notes.append(f"`{PLAIN}`: the same model after `use_layers(\"plain\")`, the layers every backend but the CPU "
                     "gets by default (einsum projections differentiated by JAX, jax.nn.dot_product_attention, no "
                     f"custom VJPs); `{OURS}` is what the CPU gets (docs/layers.md).")
    compile_s = {name: side["compile_s"] for name, side in sides.items()}
    first_loss = {name: side["first_loss"] for name, side in sides.items()}
    if not args.no_floor:
        specs = {what: dot_specs(text) for what, text in sides[OURS]["hlo"].items()}  # read once, run twice
        gflop = {what: sum(spec.flops for spec in what_specs) / 1e9 for what, what_specs in specs.items()}
        sides[FLOOR] = dots_side(specs)
        sides[TORCH_FLOOR] = dots_side(specs, torch_dots)
        notes.append(f"`{FLOOR}`: every dot of our compiled step (forward) with its shapes and dimension numbers, "
                     f"random operands, in one jitted function and nothing else ({gflop['train']:.2f} "
                     f"and {gflop['forward']:.2f} GFLOP): the time XLA:CPU's matmuls alone need. "
                     f"`{TORCH_FLOOR}`: the same products run one after another by torch.einsum (PyTorch's matmul "
                     f"library): how long the same matmuls take at PyTorch's rate.")
    print("first-step loss: " + ", ".join(f"{k} {v:.4f}" for k, v in first_loss.items())
          + f" (ln V = {math.log(args.vocab):.4f})", flush=True)
    print("first call incl. compile (s): " + ", ".join(f"{k} train {v['train']:.1f} forward {v['forward']:.1f}"
                                                       for k, v in compile_s.items()), flush=True)

    rows = compare("train fp32", "train", flops["train"], peak, sides, args.runs)
    forward_sides = {name: side for name, side in sides.items() if name != EAGER_FUSED}  # same forward as EAGER
    rows += compare("forward fp32", "forward", flops["forward"], peak, forward_sides, args.runs)
    if not args.no_bf16:
        bf16 = {OURS: jax_side(args.vocab, ids, jnp.bfloat16),
                EAGER: torch_side(args.vocab, ids, compiled=False, fused_adamw=False, autocast_bf16=True)}
        if not args.no_plain:
            bf16[PLAIN] = jax_side(args.vocab, ids, jnp.bfloat16, layers="plain")
        rows += compare("train bf16", "train", flops["train"], peak, bf16, args.runs)
        rows += compare("forward bf16", "forward", flops["forward"], peak, bf16, args.runs)

    notes.insert(0, (
        f"FLOPs: N = L(4D^2 + 3DF) + DV = {flops['matmul_params']:,} matmul parameters; forward = 2N(BT) + 4LBT^2D "
        f"= {flops['forward'] / 1e9:.2f} GFLOP; training step = 3 x forward = {flops['train'] / 1e9:.2f} GFLOP. "
        f"fp32 2048^2 matmul peak this run: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + f" GFLOP/s; % of peak is against {peak:.0f}. `this / ours` > 1 means ours is faster. "
        f"First call including compilation (s): " + "; ".join(f"{k}: train {v['train']:.1f}, forward "
                                                             f"{v['forward']:.1f}" for k, v in compile_s.items())
        + ". bf16 rows: ours computes in bfloat16 with fp32 master weights; torch uses CPU autocast and the default "
        "AdamW. `others' CPU %` is the share of the machine's CPU time other processes used during that comparison."))
    loads = [r["others' CPU %"] for r in rows if r["others' CPU %"] is not None]
    if loads and max(loads) > 100 * BUSY_SHARE:
        notes.append(f"Other processes used up to {max(loads)}% of this machine's CPU during the run: timings are "
                     "noisier than usual, and PyTorch's OpenMP threads slow down sharply when they lose their cores. "
                     "Compare ratios from runs on a quiet machine.")
    for row in rows:
        print(f"{row['case']:>13} {row['impl']:>35}: {row['median ms']:8.1f} ms  x{row['this / ours']:.2f}  "
              f"{row['GFLOP/s']:6.1f} GFLOP/s", flush=True)
    results = {"config": {"d_model": D_MODEL, "n_layers": N_LAYERS, "n_heads": N_HEADS, "seq_len": SEQ_LEN,
                          "batch": BATCH, "ffn": FFN, "vocab": args.vocab, "runs": args.runs},
               "flops": flops, "peak_gflops": peaks, "peak_others_cpu_share": peak_load.share, "compile_s": compile_s,
               "first_loss": first_loss}
    write_results("hyformer-quick" if args.quick else "hyformer", results, rows, notes="\n\n".join(notes),
                  chart=chart, columns=["case", "impl", "median ms", "min ms", "this / ours", "GFLOP/s", "% of peak",
                                        "others' CPU %"])


def chart(rows: list[dict], results: dict):
    """Left: every contender's time over ours (the tuned layers) per case; right: each row's share of the
    measured matmul peak, the limit of this CPU."""
    others = [r for r in rows if r["impl"] != OURS]
    fig, (ratios, peak) = figure(2, width=6.2, height=0.24 * len(rows) + 1.4)
    ratio_bars(ratios, [f"{r['case']}: {r['impl']}" for r in others], [r["this / ours"] for r in others],
               xlabel="their time / ours (> 1: ours is faster)")
    ratios.set_title(f"Against {OURS} = 1", fontsize=9)
    ratio_bars(peak, [f"{r['case']}: {r['impl']}" for r in rows], [r["% of peak"] for r in rows], reference=None,
               unit="%", xlabel="% of the measured fp32 matmul peak", limits={"matmul peak": 100.0})
    peak.set_title(f"Rate against this CPU's matmul peak ({max(results['peak_gflops'].values()):.0f} GFLOP/s)",
                   fontsize=9)
    fig.tight_layout()
    return fig
