"""`python -m benchmarks decode`: `jaxmodels.generate` vs transformers' `generate`, same Qwen2 weights.

Greedy decoding of a fixed number of new tokens (EOS disabled) from a 32-token prompt, at batch 1 and 8,
for two Qwen2-shaped models. Both sides run in the same process, alternating; compile time of the jitted
generation is reported separately. The generated tokens are checked to be identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxmodels_benchmarks.charts import ratio_figure
from jaxmodels_benchmarks.harness import time_alternating, write_results

TARGET_SPEEDUP = 3.0  # over transformers' generate, for the small models
SIZES = {
    "qwen2-4M": dict(vocab_size=8192, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2),
    "qwen2-57M": dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=2),
}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks decode", description=__doc__)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="the small model only, fewer tokens")
    p.add_argument("--model", help="a checkpoint directory: decode and prefill against transformers and the "
                                   "bandwidth limit instead (benchmarks/suites/decode_model.py)")
    p.add_argument("--prefill", type=int, default=512, help="with --model: prefill prompt length")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="with --model: weight dtypes, comma-separated: float32, bfloat16, float16, int8 (ours with "
                        "int8 weights, a scale per channel), q8_0 (int8 in Q8_0 blocks); the int8 ones beside "
                        "transformers' bfloat16")
    p.add_argument("--batches", default="1,8", help="with --model: batch sizes, comma-separated")
    args = p.parse_args(argv)
    if args.model:
        from jaxmodels_benchmarks.suites.decode_model import run

        run(args.model, new_tokens=args.new_tokens, prompt_tokens=args.prompt, prefill=args.prefill, runs=args.runs,
            dtypes=args.dtypes.split(","), batches=[int(b) for b in args.batches.split(",")])
        return

    import torch
    import transformers

    import jaxmodels

    torch.set_num_threads(2)
    sizes = {"qwen2-4M": SIZES["qwen2-4M"]} if args.quick else SIZES
    new = 16 if args.quick else args.new_tokens
    rows, results = [], {}
    for name, shape in sizes.items():
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
                **shape, max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.2)).eval()
            hf.save_pretrained(tmp)
            ours = jaxmodels.from_pretrained(Path(tmp))
        params = sum(p.numel() for p in hf.parameters())
        for batch in (1, 8):
            prompt = np.random.default_rng(batch).integers(0, shape["vocab_size"], (batch, args.prompt))
            t0 = time.perf_counter()
            mine = np.asarray(jaxmodels.generate(ours, prompt, new))
            compile_s = time.perf_counter() - t0

            def run_hf():
                with torch.no_grad():
                    return hf.generate(torch.tensor(prompt), max_new_tokens=new, min_new_tokens=new,
                                       do_sample=False, pad_token_id=0)

            theirs = run_hf().numpy()
            timings = time_alternating({"jax": lambda: jaxmodels.generate(ours, prompt, new), "torch": run_hf},
                                       warmup=1, runs=args.runs)
            tok = batch * new
            row = {"model": name, "params (M)": params / 1e6, "batch": batch,
                   "jaxmodels tok/s": tok / timings["jax"]["median"], "transformers tok/s": tok / timings["torch"]["median"],
                   "speed-up": timings["torch"]["median"] / timings["jax"]["median"], "compile s": compile_s,
                   "same tokens": bool(np.array_equal(mine, theirs))}
            rows.append(row)
            results[f"{name}/b{batch}"] = {**row, "timings": timings}
    write_results("decode", results, rows, chart=chart,
                  notes=f"Greedy, {new} new tokens after a {args.prompt}-token prompt; tokens/s = batch x new tokens "
                        f"/ median wall time of the whole generate call (prefill included). Target: >= {TARGET_SPEEDUP:g}x for small "
                        "models.")


def chart(rows: list[dict], results: dict):
    return ratio_figure([f"{r['model']}, batch {r['batch']}" for r in rows], [r["speed-up"] for r in rows],
                        title="Greedy generate, jaxmodels against transformers (prefill included)",
                        xlabel="our tokens/s / transformers' tokens/s (higher is better)", log=True,
                        limits={f"target {TARGET_SPEEDUP:g}x (small models)": TARGET_SPEEDUP})
