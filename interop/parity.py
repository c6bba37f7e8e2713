"""`jaxmodels-parity HF_DIR`: how close our JAX model is to transformers on a real checkpoint, on real prompts.

For each prompt (five built in: three chat turns through the tokenizer's chat template, two prose passages of
300+ tokens taken from the Python standard library's documentation at run time), it runs

* transformers in float64 (the reference), transformers in float32, and our model in float32 on the prompt's
  full logits: the max |difference| of each float32 run from the reference, and their ratio (ours / theirs);
* greedy generation of `--new-tokens` tokens in both frameworks: identical or not (both stop at EOS).

It prints a table, optionally writes the figures as JSON (`--json FILE`), and exits 1 when a ratio exceeds
`--max-ratio` or a greedy continuation differs (0 otherwise, 2 on bad input). The float64 reference is
transformers' own model run in float64: its RoPE tables and RMSNorm statistics stay float32 by design of those
modules, so "error" here is the distance from what transformers computes, in exact arithmetic elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from jaxmodels.generate import generate
from jaxmodels.io import atomic_write_bytes
from jaxmodels.layers.backend import inference_jit
from jaxmodels.pretrained import from_pretrained
from jaxmodels.tables import markdown_table


def builtin_prompts(tokenizer) -> dict[str, str]:
    """name -> prompt text. Chat prompts use the tokenizer's template (raw text when it has none)."""
    import argparse as argparse_module
    import json as json_module

    def chat(*turns):
        messages = [{"role": role, "content": content} for role, content in turns]
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(content for _, content in turns)

    return {
        "chat-capital": chat(("user", "What is the capital of France?")),
        "chat-system": chat(("system", "You are a concise assistant."),
                            ("user", "Explain what a Python list comprehension is, with an example.")),
        "chat-summary": chat(("user", "Summarise this documentation in three sentences:\n" + argparse_module.__doc__)),
        "prose-argparse": argparse_module.__doc__,
        "prose-json": json_module.__doc__,
    }


def _forward(model):
    graphdef, state = nnx.split(model)
    fwd = inference_jit(lambda state, ids: nnx.merge(graphdef, state)(ids).logits)
    return lambda ids: np.asarray(fwd(state, jnp.asarray(ids, jnp.int32)), np.float64)


def _until_eos(tokens, eos: set[int]) -> list[int]:
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos:
            break
    return out


def measure(hf_dir: str | Path, new_tokens: int = 64, prompts: dict[str, str] | None = None, *,
            gguf_file: str | None = None, ours: str | Path | None = None) -> list[dict]:
    """One row per prompt: tokens, max errors from the float64 reference, their ratio, greedy agreement.

    transformers reads `hf_dir` (or the GGUF file `gguf_file` in it, dequantised); ours is loaded from
    `ours` (default: the same directory or file) with jaxmodels.from_pretrained.
    """
    hf_dir = str(hf_dir)
    extra = {} if gguf_file is None else {"gguf_file": gguf_file}
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir, **extra)
    prompts = prompts or builtin_prompts(tokenizer)
    ref64 = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float64, **extra).eval()
    hf32 = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, **extra).eval()
    if ours is None:
        ours = hf_dir if gguf_file is None else Path(hf_dir) / gguf_file
    ours = from_pretrained(ours)
    forward = _forward(ours)
    eos = hf32.generation_config.eos_token_id
    eos = [] if eos is None else list(np.atleast_1d(eos))
    rows = []
    for name, text in prompts.items():
        ids = tokenizer(text, return_tensors="np", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref = ref64(torch.from_numpy(ids)).logits.numpy()
            theirs = hf32(torch.from_numpy(ids)).logits.double().numpy()
            hf_greedy = hf32.generate(torch.from_numpy(ids), max_new_tokens=new_tokens, do_sample=False,
                                      attention_mask=torch.ones_like(torch.from_numpy(ids)))
        logits = forward(ids)
        our_greedy = np.asarray(generate(ours, jnp.asarray(ids, jnp.int32), new_tokens,
                                         eos_token_id=eos or None))
        t = ids.shape[1]
        hf_new = _until_eos(hf_greedy[0, t:].tolist(), set(eos))
        our_new = _until_eos(our_greedy[0, t:].tolist(), set(eos))
        e_theirs, e_ours = float(np.abs(theirs - ref).max()), float(np.abs(logits - ref).max())
        rows.append(dict(prompt=name, tokens=int(t), transformers_f32_error=e_theirs, ours_f32_error=e_ours,
                         ratio=e_ours / e_theirs, ours_vs_transformers=float(np.abs(logits - theirs).max()),
                         greedy_tokens=len(hf_new), greedy_identical=hf_new == our_new,
                         continuation=tokenizer.decode(our_new, skip_special_tokens=True)))
    return rows


def table(rows: list[dict]) -> str:
    return markdown_table([{
        "prompt": r["prompt"], "tokens": r["tokens"],
        "transformers f32 vs f64": f"{r['transformers_f32_error']:.3g}", "ours f32 vs f64": f"{r['ours_f32_error']:.3g}",
        "ratio": f"{r['ratio']:.2f}x", "ours vs transformers": f"{r['ours_vs_transformers']:.3g}",
        "greedy identical": f"{'yes' if r['greedy_identical'] else 'NO'} ({r['greedy_tokens']} tokens)"} for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxmodels-parity", description=__doc__.split("\n")[0])
    parser.add_argument("hf_dir", help="a Hugging Face model directory (config.json, safetensors, tokenizer)")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens compared (default 64)")
    parser.add_argument("--max-ratio", type=float, default=1.5,
                        help="fail when ours / transformers' float32 error exceeds this (default 1.5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    path = Path(args.hf_dir)
    if not (path / "config.json").is_file():
        print(f"error: {path}: not a Hugging Face model directory (no config.json)", file=sys.stderr)
        return 2
    if args.new_tokens < 1:
        print(f"error: --new-tokens must be >= 1, got {args.new_tokens}", file=sys.stderr)
        return 2
    rows = measure(path, args.new_tokens)
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(rows, indent=1).encode() + b"\n")
    print(table(rows))
    worst = max(r["ratio"] for r in rows)
    same = all(r["greedy_identical"] for r in rows)
    print(f"\nworst error ratio {worst:.2f}x (limit {args.max_ratio}x); greedy {'identical on all' if same else 'DIFFERS on some'}"
          f" prompts; backend {jax.default_backend()}")
    return 0 if worst <= args.max_ratio and same else 1


if __name__ == "__main__":
    sys.exit(main())
