"""V.V.A.L.T: our batched, jitted Flax forward vs a per-sample NumPy loop of the same math (the original's way).

`python -m benchmarks vvalt [--quick] [--batch B]`. Sizes are the seed's (input 768, frame 512, task 64,
hidden 1024). The NumPy side is `jaxmodels.vvalt.reference.batch_forward`: float64, one sample at a time,
as the original's Hugging Face wrapper ran it. Both sides use the same seed-42 weights; the run also records
how far apart their outputs are.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import statistics
import time

from jaxmodels_benchmarks.charts import ratio_figure
from jaxmodels_benchmarks.harness import block, write_results
from jaxmodels.vvalt import VVALTConfig, VVALTModel, original_weights
from jaxmodels.vvalt import reference as ref

TARGET_SPEEDUP = 100.0  # of the batched float32 forward over the original's NumPy loop, at batch 256


def flops_per_sample(c: VVALTConfig) -> int:
    """Multiply-adds x 2 of one forward pass (the batched form: pooled before the value projection)."""
    i, f, h, k = c.input_dim, c.frame_dim, c.resolved_hidden_dim, 5
    return 2 * (k * i * f + k * f * f + 2 * k * f * f + k * k * f + k * f + 2 * f * f + 2 * f * h)


def interleaved(fns: dict, *, runs: int, rewarm: set[str]) -> dict[str, dict]:
    """Times the functions round by round (so load from other processes hits them alike), median of `runs`.

    Functions in `rewarm` get one untimed call right before each timed one: the NumPy loop streams ~35 MB of
    float64 weights per sample and would otherwise leave the next JAX call with cold caches, which is not
    what a model serving batches back to back sees. The NumPy loop itself is never cache-resident.
    """
    for fn in fns.values():
        block(fn())
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            if name in rewarm:
                block(fn())
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "runs": runs}
            for name, t in times.items()}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks vvalt", description=__doc__)
    p.add_argument("--quick", action="store_true", help="batch 32 and 2 runs (a smoke test)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256, 32 with --quick)")
    args = p.parse_args(argv)
    batch = args.batch or (32 if args.quick else 256)
    runs = 2 if args.quick else 5

    config = VVALTConfig(input_dim=768, frame_dim=512, task_dim=64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, config.input_dim))
    t = rng.standard_normal((batch, config.task_dim))
    weights = original_weights(config)
    model32 = VVALTModel(config)
    model64 = VVALTModel(config, param_dtype=jnp.float64)
    x32, t32 = jax.device_put(x.astype(np.float32)), jax.device_put(t.astype(np.float32))

    timings = interleaved({
        "numpy": lambda: ref.batch_forward(weights, x, t),
        "jax32": lambda: model32(x32, t32).last_hidden_state,
        "jax64": lambda: model64(x, t).last_hidden_state,
        "jax32_trace": lambda: model32(x32, t32, return_trace=True),
    }, runs=runs, rewarm={"jax32", "jax64", "jax32_trace"})
    expected = ref.batch_forward(weights, x, t)
    err32 = float(np.max(np.abs(np.asarray(model32(x32, t32).last_hidden_state) - expected)))
    err64 = float(np.max(np.abs(np.asarray(model64(x, t).last_hidden_state) - expected)))

    gflop = flops_per_sample(config) * batch / 1e9
    base = timings["numpy"]["median"]
    labels = {"numpy": "NumPy per-sample loop, float64 (the original's way)", "jax32": "JAX batched jit, float32",
              "jax64": "JAX batched jit, float64", "jax32_trace": "JAX batched jit, float32, with full trace"}
    errors = {"jax32": err32, "jax64": err64}
    rows = [{"implementation": labels[k], "batch": batch, "median_ms": 1e3 * v["median"],
             "samples_per_s": batch / v["median"], "GFLOP/s": gflop / v["median"], "speedup_vs_numpy": base / v["median"],
             "max_abs_diff_vs_numpy": errors.get(k, "")} for k, v in timings.items()]
    notes = (f"Sizes: input 768, frame 512, task 64, hidden 1024, batch {batch}; {gflop:.2f} GFLOP per batch. "
             f"Speedup of the float32 forward: {base / timings['jax32']['median']:.0f}x "
             f"(target >= {TARGET_SPEEDUP:g}x at batch 256).")
    write_results("vvalt", {"config": config.to_dict(), "batch": batch, "timings_s": timings,
                            "max_abs_diff": errors, "gflop_per_batch": gflop}, rows, notes=notes, chart=chart)


def chart(rows: list[dict], results: dict):
    jax_rows = rows[1:]  # the first row is the NumPy reference itself
    return ratio_figure([r["implementation"] for r in jax_rows], [r["speedup_vs_numpy"] for r in jax_rows],
                        title=f"V.V.A.L.T forward, batch {results['batch']}, against the original's NumPy loop",
                        xlabel="NumPy time / this time (higher is better)", log=True,
                        limits={f"target {TARGET_SPEEDUP:g}x": TARGET_SPEEDUP})
