"""`python -m interop.qwen_vl generate|learn|validate|tiny ...`: the runner for people who do not write Python."""

from __future__ import annotations

import argparse
import json
import sys

from jaxmodels.paths import check_destination
from jaxmodels_interop.qwen_vl.loading import ATTN_IMPLEMENTATIONS


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="local Qwen2.5-VL directory or hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct)")
    p.add_argument("--attn", default="flash_attention_2", choices=ATTN_IMPLEMENTATIONS,
                   help="tried first; falls back to the next one that runs here (the choice is printed)")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, else float32), float32, bfloat16, float16")
    p.add_argument("--device-map", default=None, help="cpu, cuda, cuda:1, or auto (needs accelerate)")
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=32)


def _runner(args, **extra):
    from jaxmodels_interop.qwen_vl.runner import OnlineLLM

    llm = OnlineLLM(args.model, attn_implementation=args.attn, dtype=args.dtype, device_map=args.device_map,
                    min_pixels=args.min_pixels, max_pixels=args.max_pixels, lora_rank=args.lora_rank,
                    lora_alpha=args.lora_alpha, **extra)
    print(f"# attention: {llm.hf_model.attn_note}; dtype {str(llm.hf_model.dtype).removeprefix('torch.')} "
          f"on {llm.device}", file=sys.stderr)
    return llm


def cmd_generate(args) -> int:
    llm = _runner(args, temperature=args.temperature, max_tokens=args.max_tokens)
    if args.adapter_dir:
        llm.load_adapter(args.adapter_dir, args.adapter or "default")
    name = args.adapter or ("default" if args.adapter_dir else None)
    expert = None
    if args.svf_expert:
        info = llm.load_expert(args.svf_expert, "expert")
        print(f"# SVF expert {args.svf_expert}: {info['matrices']} matrices, {info['z']} z values", file=sys.stderr)
        expert = "expert"
    images = args.image or None
    if args.stream:
        for piece in llm.stream(args.prompt, name, images, seed=args.seed, svf_expert=expert):
            print(piece, end="", flush=True)
        print()
    else:
        print(llm.generate(args.prompt, name, images, seed=args.seed, svf_expert=expert))
    return 0


def cmd_learn(args) -> int:
    import torch

    check_destination(args.out, [args.model, args.init_from, *(args.image or [])], what="--out")
    torch.manual_seed(args.seed)
    llm = _runner(args, temperature=0.0, max_tokens=args.max_tokens)
    if args.init_from:
        llm.load_adapter(args.init_from, args.adapter)
    losses = llm.learn(args.prompt, args.response, lora_adapter=args.adapter, steps=args.steps, lr=args.lr,
                       images=args.image or None)
    print(json.dumps({"adapter": args.adapter, "losses": losses}))
    llm.save_adapter(args.adapter, args.out, overwrite=args.force)
    print(f"# adapter {args.adapter!r} saved to {args.out} (peft format)", file=sys.stderr)
    if args.show:
        print(llm.generate(args.prompt, args.adapter, args.image or None))
    return 0


def cmd_validate(args) -> int:
    from jaxmodels.tables import markdown_table
    from jaxmodels_interop.qwen_vl.validate import validate

    rows = validate(args.model, prompt=args.prompt, image=args.image, max_tokens=args.max_tokens, atol=args.atol,
                    flax=not args.no_flax, attn_implementation=args.attn)
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows, list(dict.fromkeys(k for r in rows for k in r))))
    failed = [r["check"] for r in rows if not r["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_tiny(args) -> int:
    from jaxmodels_interop.qwen_vl.tiny import build_tiny

    print(build_tiny(args.out, seed=args.seed, overwrite=args.force))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m interop.qwen_vl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text for a prompt (and images)")
    _model_args(g)
    g.add_argument("prompt")
    g.add_argument("--image", action="append", help="image file (repeatable)")
    g.add_argument("--adapter", help="LoRA adapter name (default: the base model)")
    g.add_argument("--adapter-dir", help="load a saved peft adapter from this directory first")
    g.add_argument("--svf-expert", metavar="PATH",
                   help="patch the language model with this SVF expert (safetensors from jaxmodels.svf / training.svf)")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    g.set_defaults(fn=cmd_generate)

    lp = sub.add_parser("learn", help="train a LoRA adapter on one prompt/response pair and save it")
    _model_args(lp)
    lp.add_argument("prompt")
    lp.add_argument("response")
    lp.add_argument("--out", required=True, help="directory for the adapter (peft format)")
    lp.add_argument("--adapter", default="default")
    lp.add_argument("--init-from", help="continue from a saved adapter directory")
    lp.add_argument("--image", action="append")
    lp.add_argument("--steps", type=int, default=3)
    lp.add_argument("--lr", type=float, default=1e-4)
    lp.add_argument("--max-tokens", type=int, default=64)
    lp.add_argument("--seed", type=int, default=0, help="seeds torch before the adapter is created (its "
                                                         "initialisation), so a run does not depend on what ran before")
    lp.add_argument("--show", action="store_true", help="print the adapter's answer to the prompt afterwards")
    lp.add_argument("--force", action="store_true", help="overwrite --out")
    lp.set_defaults(fn=cmd_learn)

    v = sub.add_parser("validate", help="runner vs transformers directly, and (text) vs our Flax Qwen2 decoder")
    v.add_argument("model")
    v.add_argument("--attn", default="eager", choices=ATTN_IMPLEMENTATIONS)
    v.add_argument("--prompt", default="Describe the image in one sentence.")
    v.add_argument("--image", default="synthetic", help='image file, or "synthetic" (a fixed 56x56 gradient)')
    v.add_argument("--max-tokens", type=int, default=8)
    v.add_argument("--atol", type=float, default=1e-4)
    v.add_argument("--no-flax", action="store_true", help="skip the Flax comparison")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)

    t = sub.add_parser("tiny", help="write a tiny random Qwen2.5-VL with tokenizer and processor (for trying it out)")
    t.add_argument("out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true")
    t.set_defaults(fn=cmd_tiny)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, KeyError, OSError) as err:  # OSError: e.g. a read-only or full --out
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
