"""`python -m benchmarks convert`: streaming conversion of a synthetic ~1 GiB Qwen2 checkpoint.

Writes random bf16 weights with the real Qwen2.5-0.5B shapes (494M parameters, tied embeddings) as one
safetensors file, then in fresh subprocesses: a plain file copy, `from-hf` (HF -> ours) and `to-hf`
(ours -> HF). Reports GiB/s against the copy and the peak extra memory of each conversion (peak RSS
minus RSS after imports) against the target of 1.3 x the largest shard.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxmodels_benchmarks.charts import figure, ratio_bars
from jaxmodels_benchmarks.harness import write_results

TARGET_EXTRA = 1.3  # peak extra memory of a conversion, in largest shards
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True, rms_norm_eps=1e-6)

_CHILD = r"""
import json, shutil, sys, time
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
from jaxmodels_interop import convert_cli  # imports jax, flax, safetensors first: they are not the conversion's memory
mode, src, dst = sys.argv[1:4]
base = rss("VmRSS:")
t0 = time.perf_counter()
if mode == "copy":
    shutil.copytree(src, dst)
elif mode == "from-hf":
    convert_cli.from_hf(__import__("pathlib").Path(src), __import__("pathlib").Path(dst))
else:
    convert_cli.to_hf(__import__("pathlib").Path(src), __import__("pathlib").Path(dst))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "extra_bytes": rss("VmHWM:") - base}))
"""


def make_checkpoint(path: Path, layers: int) -> int:
    """Random bf16 weights with Qwen2.5-0.5B shapes, written tensor by tensor; returns the file size."""
    import ml_dtypes
    import numpy as np

    from jaxmodels.hf.writer import PlannedTensor, write_shards
    from jaxmodels.llama import Qwen2Config

    cfg = Qwen2Config(**{**QWEN25_05B, "num_hidden_layers": layers})
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg.to_hf_config()))
    rng = np.random.default_rng(0)
    d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.q_proj.bias": (d,),
                       p + "self_attn.k_proj.weight": (cfg.kv_heads * h, d), p + "self_attn.k_proj.bias": (cfg.kv_heads * h,),
                       p + "self_attn.v_proj.weight": (cfg.kv_heads * h, d), p + "self_attn.v_proj.bias": (cfg.kv_heads * h,),
                       p + "self_attn.o_proj.weight": (d, d), p + "mlp.gate_proj.weight": (f, d),
                       p + "mlp.up_proj.weight": (f, d), p + "mlp.down_proj.weight": (d, f)})
    bf16 = np.dtype(ml_dtypes.bfloat16)
    tensors = [PlannedTensor(k, s, bf16, lambda s=s: (0.02 * rng.standard_normal(s, np.float32)).astype(bf16))
               for k, s in sorted(shapes.items())]
    write_shards(tensors, path, metadata={"format": "pt"})
    return (path / "model.safetensors").stat().st_size


def run_child(mode: str, src: Path, dst: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src), str(dst)], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks convert", description=__doc__)
    p.add_argument("--layers", type=int, default=24, help="24 = the real model (~0.99 GB in bf16)")
    p.add_argument("--quick", action="store_true", help="4 layers (~0.34 GB)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    layers = 4 if args.quick else args.layers
    work = Path(tempfile.mkdtemp(prefix="convert-bench-"))
    try:
        size = make_checkpoint(work / "hf", layers)
        rows, results = [], {"checkpoint_bytes": size, "largest_shard_bytes": size, "layers": layers}
        for mode, src in (("copy", work / "hf"), ("from-hf", work / "hf"), ("to-hf", work / "ours")):
            runs = []
            for r in range(args.runs):
                dst = work / ("ours" if mode == "from-hf" and r == args.runs - 1 else f"{mode}-{r}")
                runs.append(run_child(mode, src, dst))
                if dst.name != "ours":
                    shutil.rmtree(dst)
            best = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
            gib_s = size / 2**30 / best["seconds"]
            results[mode] = {"runs": runs, "median_seconds": best["seconds"], "gib_per_s": gib_s,
                             "peak_extra_bytes": max(x["extra_bytes"] for x in runs)}
            rows.append({"operation": mode, "median s": best["seconds"], "GiB/s": gib_s,
                         "peak extra MiB": max(x["extra_bytes"] for x in runs) / 2**20,
                         "extra / largest shard": max(x["extra_bytes"] for x in runs) / size})
        for row in rows[1:]:
            row["speed vs copy"] = row["GiB/s"] / rows[0]["GiB/s"]
        notes = (f"Synthetic Qwen2.5-0.5B-shaped bf16 checkpoint, {layers} layers, {size / 2**30:.3f} GiB in one "
                 f"file. Target: peak extra memory <= {TARGET_EXTRA:g} x the largest shard; measured "
                 f"{max(r['extra / largest shard'] for r in rows[1:]):.2f} x.")
        write_results("convert", results, rows, notes=notes, chart=chart, columns=[
            "operation", "median s", "GiB/s", "speed vs copy", "peak extra MiB", "extra / largest shard"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def chart(rows: list[dict], results: dict):
    """Throughput against a plain copy of the file, and peak extra memory against the target."""
    ops = rows[1:]
    fig, (speed, memory) = figure(2, width=5.5, height=2.4)
    ratio_bars(speed, [r["operation"] for r in ops], [r["speed vs copy"] for r in ops],
               xlabel="GiB/s / a plain copy's GiB/s (higher is better)")
    speed.set_title("Conversion speed", fontsize=10)
    ratio_bars(memory, [r["operation"] for r in ops], [r["extra / largest shard"] for r in ops],
               xlabel="peak extra memory / the largest shard (lower is better)", better="lower",
               limits={f"target {TARGET_EXTRA:g}x": TARGET_EXTRA})
    memory.set_title("Peak memory above the imports", fontsize=10)
    fig.tight_layout()
    return fig
