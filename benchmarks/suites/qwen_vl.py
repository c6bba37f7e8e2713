"""`python -m benchmarks qwen-vl`: prefill and decode tokens/s of the Qwen2.5-VL runner (transformers + peft).

For each attention implementation that runs on this machine (flash_attention_2 needs CUDA and flash-attn),
with and without an image, LoRA off (base, adapters disabled) and on (a rank-8 adapter on q/k/v/o, active):
- prefill: one forward over the batch of prompts; tokens/s = batch x prompt tokens / median time;
- decode: `generate` of a fixed number of new tokens (EOS disabled); tokens/s = batch x new tokens /
  (median generate time - median prefill time).
Inputs are encoded once by the runner's processor, so processor time is not in the figures. The model is a
random Qwen2.5-VL built locally (no hub access); its size is in the table. On a GPU the same command reports GPU
figures (the device is chosen like the runner's: CUDA when present).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import time_alternating, time_fn, write_results

IN_ALL = False  # needs torchvision (see docs/qwen_vl.md); run it by name


def _async_rows(llm, prompt: str, n: int, new: int, runs: int, rows: list[dict]) -> dict:
    """n concurrent greedy generate_async calls, coalesced into batches vs one model call each."""
    import asyncio

    prompts = [f"{prompt} ({k})" for k in range(n)]

    async def burst():
        return await asyncio.gather(*(llm.generate_async(p, max_tokens=new) for p in prompts))

    out = {}
    for coalesce in (False, True):
        llm.coalesce = coalesce
        t = time_fn(lambda: asyncio.run(burst()), warmup=1, runs=runs)
        out["coalesced" if coalesce else "serial"] = t
        rows.append({"attention": llm.attn_implementation, "image": False, "LoRA": False,
                     "batch": f"{n} async calls, {'coalesced' if coalesce else 'one by one'}",
                     "generate s": t["median"], "decode tok/s": n * new / t["median"]})
    llm.coalesce = True
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks qwen-vl", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the 64-wide test model, fewer tokens and runs")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 1 by default: with models this small, a second thread only adds "
                        "synchronisation, which on a shared machine costs ~10x (measured here: 6 vs 55 ms per step)")
    args = p.parse_args(argv)

    import torch

    from jaxmodels_interop.qwen_vl import OnlineLLM, available_attn_implementations
    from jaxmodels_interop.qwen_vl.tiny import build_tiny

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = {} if args.quick else {"hidden_size": 256, "num_hidden_layers": 4}
    new = 8 if args.quick else args.new_tokens
    batch = 2 if args.quick else args.batch
    runs = 2 if args.quick else args.runs
    prompt = "Describe the image in one sentence, then explain what the dog is doing and why. " * 2
    image = (np.random.RandomState(0).rand(112, 112, 3) * 255).astype(np.uint8)
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny(Path(tmp) / "model", **sizes)
        attn_implementations = available_attn_implementations(device)
        for attn in attn_implementations:
            llm = OnlineLLM(path, temperature=0.0, max_tokens=new, attn_implementation=attn, lora_rank=8,
                            lora_alpha=16, max_pixels=112 * 112)
            llm.learn("Hi", "there", lora_adapter="bench", steps=1, lr=1e-4)
            params = sum(p.numel() for n, p in llm.hf_model.model.named_parameters() if "lora_" not in n)
            model, pad = llm.hf_model.model, llm.hf_model.tokenizer.pad_token_id
            for with_image in (False, True):
                inputs = llm.encode([prompt] * batch, [[image]] * batch if with_image else None)
                tokens = inputs["input_ids"].shape[1]
                for lora in (None, "bench"):

                    def prefill(lora=lora, inputs=inputs):
                        with torch.no_grad(), llm.adapters.active(lora):
                            return model(**inputs, use_cache=True).logits

                    def generate(lora=lora, inputs=inputs):
                        with torch.no_grad(), llm.adapters.active(lora):
                            return model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                                  pad_token_id=pad)

                    t = time_alternating({"prefill": prefill, "generate": generate}, warmup=1, runs=runs)
                    decode_s = max(t["generate"]["median"] - t["prefill"]["median"], 1e-9)
                    row = {"attention": attn, "image": with_image, "LoRA": lora is not None,
                           "params (M)": params / 1e6, "batch": batch, "prompt tokens": tokens,
                           "prefill tok/s": batch * tokens / t["prefill"]["median"],
                           "decode tok/s": batch * new / decode_s, "generate s": t["generate"]["median"]}
                    rows.append(row)
                    results[f"{attn}/{'image' if with_image else 'text'}/{'lora' if lora else 'base'}"] = {
                        **row, "timings": t}
                    print(row, flush=True)
            if attn == attn_implementations[0]:
                results["async"] = _async_rows(llm, prompt, batch * 2, new, runs, rows)
    suite = "qwen-vl-quick" if args.quick else "qwen-vl"
    write_results(suite, results, rows, chart=chart,
                  notes=f"device {device}, {args.threads} CPU thread(s); greedy, {new} new tokens; image 112x112 = 16 image tokens per prompt; "
                        "LoRA rank 8 on the language model's q/k/v/o (peft, unmerged). flash_attention_2 appears "
                        "only where CUDA and flash-attn are present. The 'async calls' rows: concurrent greedy "
                        "generate_async requests, each its own model call vs coalesced into batches; their tok/s "
                        "include prefill and the processor.")


def _kind(row: dict) -> str:
    return ("image" if row["image"] else "text") + (" + LoRA" if row["LoRA"] else "")


def chart(rows: list[dict], results: dict):
    """Prefill and decode tokens/s per input kind, one bar per attention implementation; the async calls one by
    one against coalesced, with the ratio."""
    timed = [r for r in rows if r.get("prefill tok/s") is not None]
    calls = [r for r in rows if r.get("prefill tok/s") is None]
    kinds = list(dict.fromkeys(_kind(r) for r in timed))
    attentions = list(dict.fromkeys(r["attention"] for r in timed))
    fig, axes = figure(3 if calls else 2, width=4.6, height=3.6)
    for ax, key in zip(axes, ("prefill tok/s", "decode tok/s")):
        by = {(r["attention"], _kind(r)): r[key] for r in timed}
        grouped_bars(ax, kinds, {a: [by.get((a, k), 0.0) for k in kinds] for a in attentions})
        ax.set_ylabel(key)
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=8)
    axes[0].set_title("Prefill (higher is better)", fontsize=10)
    axes[1].set_title("Decode (higher is better)", fontsize=10)
    if calls:
        ax = axes[2]
        speeds = [r["decode tok/s"] for r in calls]
        ax.bar(range(len(calls)), speeds, 0.6, color=["tab:orange", "tab:blue"][:len(calls)])
        ax.set_xticks(range(len(calls)), [r["batch"].replace("async calls, ", "calls,\n") for r in calls], fontsize=8)
        if len(calls) == 2:
            ax.annotate(f"{speeds[1] / speeds[0]:.2f}x", (1, speeds[1]), ha="center", va="bottom")
        ax.set_ylim(0, 1.15 * max(speeds))
        ax.set_ylabel("tok/s (prefill and processor included)")
        ax.set_title("Concurrent generate_async", fontsize=10)
    fig.tight_layout()
    return fig
