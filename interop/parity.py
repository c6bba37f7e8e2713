"""`jaxmodels-parity HF_DIR`: how close our JAX model is to transformers on a real checkpoint, on real prompts.

For each prompt (five built in: three chat turns through the tokenizer's chat template, two prose passages of
300+ tokens taken from the Python standard library's documentation at run time), it runs

* the reference: transformers' model in float64 throughout (its norms and RoPE tables too, which transformers
  itself keeps in float32 even in a float64 model; interop/exact_reference.py);
* transformers and our model in float32 on the prompt's full logits, each on `--orderings` channel orders of
  the same model (the model's own first, then permutations of its hidden channels: the same function, rounded
  differently; interop/channel_order.py): the max |difference| from the reference per ordering, the medians,
  and the ratio of the medians (ours / theirs). One ordering alone is a noisy draw: transformers' own error on
  a 37-token SmolLM2 prompt ranges over 2.5x across six orderings. The ratio on the model as it is, the RMS
  ratio and the distance between the two frameworks are reported beside it;
* greedy generation of `--new-tokens` tokens in both frameworks: identical or not (both stop at EOS).

It prints a table, optionally writes the figures as JSON (`--json FILE`), and exits 1 when a ratio of medians
exceeds `--max-ratio` or a greedy continuation differs (0 otherwise, 2 on bad input).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from jaxmodels import compilation_cache
from jaxmodels.generate import forward_logits, generate
from jaxmodels.io import atomic_write_bytes
from jaxmodels.pretrained import from_pretrained
from jaxmodels.tables import markdown_table
from jaxmodels_interop.channel_order import orderings as channel_orderings
from jaxmodels_interop.channel_order import reordered
from jaxmodels_interop.exact_reference import exact_float64


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


def until_eos(tokens, eos: set[int]) -> list[int]:
    """The tokens up to and including the first one in `eos` (all of them if none is)."""
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos:
            break
    return out


def save_plain_hf(model, directory: str | Path) -> None:
    """save_pretrained of a transformers model, one read from GGUF included: that keeps its dequantiser and
    quantization_config, which save_pretrained refuses, so both are dropped first."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a bar per channel ordering would bury the table
    try:
        model.save_pretrained(directory)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _logits(graphdef, state, ids) -> np.ndarray:
    return np.asarray(forward_logits(graphdef, state, jnp.asarray(ids, jnp.int32)), np.float64)


def _max(a, b) -> float:
    return float(np.abs(a - b).max())


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def measure(hf_dir: str | Path, new_tokens: int = 64, prompts: dict[str, str] | None = None, *,
            gguf_file: str | None = None, ours: str | Path | None = None, orderings: int = 5) -> list[dict]:
    """One row per prompt: tokens, errors from the float64 reference, their ratio, greedy agreement.

    transformers reads `hf_dir` (or the GGUF file `gguf_file` in it, dequantised); ours is loaded from
    `ours` (default: the same directory or file) with jaxmodels.from_pretrained. Each float32 error is measured
    on `orderings` channel orders of the same model (the model's own first; interop/channel_order.py) and the
    row's `ratio` is the ratio of the medians; `ratio_natural_order` is the ratio on the model as it is.
    """
    hf_dir = str(hf_dir)
    extra = {} if gguf_file is None else {"gguf_file": gguf_file}
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir, **extra)
    prompts = prompts or builtin_prompts(tokenizer)
    ref64 = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float64, **extra).eval()
    patched = exact_float64(ref64)
    reference = "float64" if patched.exact else f"float64 except {', '.join(patched.kept)} (float32 inside)"
    hf32 = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, **extra).eval()
    if ours is None:
        ours = hf_dir if gguf_file is None else Path(hf_dir) / gguf_file
    ours = from_pretrained(ours)
    graphdef, state = nnx.split(ours)
    eos = hf32.generation_config.eos_token_id
    eos = [] if eos is None else list(np.atleast_1d(eos))
    ids = {name: tokenizer(text, return_tensors="np", add_special_tokens=False)["input_ids"]
           for name, text in prompts.items()}
    with torch.no_grad():
        refs = {name: ref64(torch.from_numpy(x)).logits.numpy() for name, x in ids.items()}
    del ref64
    errors = {name: {"theirs": [], "ours": [], "theirs_rms": [], "ours_rms": []} for name in ids}
    natural = {}
    for k, perm in enumerate(channel_orderings(hf32.config.hidden_size, orderings)):
        theirs_model, our_state = hf32, state
        if k:  # the reordered transformers model, and ours read from it as from any checkpoint
            theirs_model = reordered(hf32, perm)
            with tempfile.TemporaryDirectory() as tmp:
                save_plain_hf(theirs_model, tmp)
                our_state = nnx.split(from_pretrained(tmp))[1]
        for name, x in ids.items():
            with torch.no_grad():
                theirs = theirs_model(torch.from_numpy(x)).logits.double().numpy()
            logits = _logits(graphdef, our_state, x)
            e = errors[name]
            e["theirs"].append(_max(theirs, refs[name]))
            e["ours"].append(_max(logits, refs[name]))
            e["theirs_rms"].append(_rms(theirs, refs[name]))
            e["ours_rms"].append(_rms(logits, refs[name]))
            if k == 0:
                natural[name] = _max(logits, theirs)
    rows = []
    for name, x in ids.items():
        with torch.no_grad():
            hf_greedy = hf32.generate(torch.from_numpy(x), max_new_tokens=new_tokens, do_sample=False,
                                      attention_mask=torch.ones_like(torch.from_numpy(x)))
        our_greedy = np.asarray(generate(ours, jnp.asarray(x, jnp.int32), new_tokens, eos_token_id=eos or None))
        t = x.shape[1]
        hf_new = until_eos(hf_greedy[0, t:].tolist(), set(eos))
        our_new = until_eos(our_greedy[0, t:].tolist(), set(eos))
        e = errors[name]
        theirs, mine = float(np.median(e["theirs"])), float(np.median(e["ours"]))
        rows.append(dict(prompt=name, tokens=int(t), reference=reference, orderings=len(e["ours"]),
                         transformers_f32_errors=e["theirs"], ours_f32_errors=e["ours"],
                         transformers_f32_error=theirs, ours_f32_error=mine, ratio=mine / theirs,
                         ratio_natural_order=e["ours"][0] / e["theirs"][0],
                         rms_ratio=float(np.median(e["ours_rms"]) / np.median(e["theirs_rms"])),
                         ours_vs_transformers=natural[name],
                         greedy_tokens=len(hf_new), greedy_identical=hf_new == our_new,
                         continuation=tokenizer.decode(our_new, skip_special_tokens=True)))
    return rows


def table(rows: list[dict]) -> str:
    def spread(values):
        return f"{np.median(values):.2e} ({min(values):.1e}..{max(values):.1e})" if len(values) > 1 else f"{values[0]:.2e}"

    return markdown_table([{
        "prompt": r["prompt"], "tokens": r["tokens"],
        "transformers f32 vs f64": spread(r["transformers_f32_errors"]), "ours f32 vs f64": spread(r["ours_f32_errors"]),
        "ratio": f"{r['ratio']:.2f}x", "ratio, own order": f"{r['ratio_natural_order']:.2f}x",
        "RMS ratio": f"{r['rms_ratio']:.2f}x", "ours vs transformers": f"{r['ours_vs_transformers']:.3g}",
        "greedy identical": f"{'yes' if r['greedy_identical'] else 'NO'} ({r['greedy_tokens']} tokens)"} for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxmodels-parity", description=__doc__.split("\n")[0])
    parser.add_argument("hf_dir", help="a Hugging Face model directory (config.json, safetensors, tokenizer)")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens compared (default 64)")
    parser.add_argument("--max-ratio", type=float, default=1.5,
                        help="fail when the median ours / transformers' float32 error exceeds this (default 1.5)")
    parser.add_argument("--orderings", type=int, default=5,
                        help="channel orders each float32 error is measured on (default 5; 1: the model's own)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    compilation_cache.enable()
    path = Path(args.hf_dir)
    if not (path / "config.json").is_file():
        print(f"error: {path}: not a Hugging Face model directory (no config.json)", file=sys.stderr)
        return 2
    if args.new_tokens < 1:
        print(f"error: --new-tokens must be >= 1, got {args.new_tokens}", file=sys.stderr)
        return 2
    if args.orderings < 1:
        print(f"error: --orderings must be >= 1, got {args.orderings}", file=sys.stderr)
        return 2
    rows = measure(path, args.new_tokens, orderings=args.orderings)
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(rows, indent=1).encode() + b"\n")
    print(table(rows))
    worst = max(r["ratio"] for r in rows)
    same = all(r["greedy_identical"] for r in rows)
    print(f"\nreference: {rows[0]['reference']}; medians over {rows[0]['orderings']} channel orderings")
    print(f"worst error ratio {worst:.2f}x (limit {args.max_ratio}x); greedy {'identical on all' if same else 'DIFFERS on some'}"
          f" prompts; backend {jax.default_backend()}")
    return 0 if worst <= args.max_ratio and same else 1


if __name__ == "__main__":
    sys.exit(main())
