"""`jaxmodels-convert`: move checkpoints between our Flax models and Hugging Face PyTorch checkpoints.

  jaxmodels-convert from-hf SRC DST   a transformers checkpoint (or the original Hyformer's) -> ours
  jaxmodels-convert to-hf SRC DST     ours (a model dir or a training run dir) -> a transformers checkpoint
  jaxmodels-convert from-gguf FILE OUT  a llama.cpp .gguf file -> ours (or --to hf: a transformers directory)
  jaxmodels-convert inspect PATH      what a checkpoint directory holds

Every registered model family converts the same way (jaxmodels.pretrained over jaxmodels.family). Conversions
stream one tensor at a time, check every key and shape against the target model before writing anything, write
into a temporary sibling renamed at the end, and never replace an existing DST without --force. `--verify` runs
both frameworks on the same inputs and fails past the family's tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxmodels import family as families
from jaxmodels.hf.source import CheckpointError, SafetensorsCheckpoint
from jaxmodels.hf.writer import parse_size
from jaxmodels.pretrained import DTYPES, convert_from_hf, convert_to_hf, model_dir, resolve

__all__ = ["DTYPES", "from_gguf", "from_hf", "inspect", "main", "open_weights", "parse_size", "to_hf"]


def open_weights(src: Path):
    """A safetensors checkpoint, or a PyTorch .bin one read with torch.load(weights_only=True)."""
    try:
        return SafetensorsCheckpoint(src)
    except CheckpointError as e:
        if "pytorch_model.bin" not in str(e) and "model.pt" not in str(e):
            raise
    from jaxmodels_interop.torch_bin import TorchBinCheckpoint

    return TorchBinCheckpoint(src)


def from_hf(src: Path, dst: Path, *, model_type=None, dtype=None, max_shard=None, force=False) -> dict:
    """A Hugging Face directory -> ours (safetensors or PyTorch .bin weights)."""
    resolve(src, model_type)  # a config problem is reported before the weights are opened
    return convert_from_hf(src, dst, model_type=model_type, dtype=dtype, max_shard_size=max_shard,
                           overwrite=force, weights=open_weights(Path(src)))


def to_hf(src: Path, dst: Path, *, dtype=None, max_shard=None, force=False, layout: str = "transformers") -> dict:
    """Ours (a model directory or a training run directory) -> a Hugging Face directory."""
    return convert_to_hf(src, dst, dtype=dtype, max_shard_size=max_shard, overwrite=force, layout=layout)


def from_gguf(src: Path, dst: Path, *, dtype=None, to: str = "ours", force=False) -> dict:
    """A .gguf file -> ours or (to="hf") a transformers directory, dequantised, with its tokenizer files."""
    from jaxmodels_interop.from_gguf import convert_from_gguf

    return convert_from_gguf(src, dst, dtype=dtype, to=to, overwrite=force)


def inspect(path: Path) -> dict:
    path = model_dir(path)
    resolved = resolve(path)
    weights = open_weights(path)
    dtypes: dict[str, int] = {}
    for key in weights.keys():
        dtypes[weights.dtype(key)] = dtypes.get(weights.dtype(key), 0) + 1
    return {"path": str(path), "format": "jaxmodels" if resolved.native else "huggingface",
            "model_type": resolved.family.model_types[0], "family": resolved.family.name,
            "class": resolved.family.model_class(resolved.config, weights.keys(), resolved.hf_config).__name__,
            "config": resolved.config.to_dict(), "ignored_hf_attributes": resolved.ignored,
            "tensors": len(weights.keys()), "parameters": sum(int(np.prod(weights.shape(k))) for k in weights.keys()),
            "dtypes": dtypes, "files": list(getattr(weights, "files", [])), "bytes": weights.total_bytes()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmodels-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    layouts = sorted({"transformers", *(name for f in families.families() for name in f.layouts)})
    for name, help_text in (("from-hf", "a Hugging Face checkpoint directory -> ours"),
                            ("to-hf", "our checkpoint (or training run) directory -> a Hugging Face one")):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("src", type=Path)
        c.add_argument("dst", type=Path)
        c.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating-point tensors (default: keep)")
        c.add_argument("--max-shard-size", help="e.g. 2GB: write shards and model.safetensors.index.json")
        c.add_argument("--verify", action="store_true", help="compare the outputs of both frameworks afterwards")
        c.add_argument("--force", action="store_true", help="replace DST if it exists")
        if name == "from-hf":
            c.add_argument("--model-type", choices=families.model_types(), help="when config.json does not say")
        else:
            c.add_argument("--layout", default="transformers", choices=layouts,
                           help="transformers (default), or another layout of the family (hyformer: original)")
    g = sub.add_parser("from-gguf", help="a llama.cpp .gguf file -> ours (or a Hugging Face directory)")
    g.add_argument("src", type=Path, metavar="FILE")
    g.add_argument("dst", type=Path, metavar="OUT")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dequantise to this dtype (default float32)")
    g.add_argument("--to", choices=("ours", "hf"), default="ours",
                   help="ours (default: what save_pretrained writes) or hf (a transformers directory)")
    g.add_argument("--force", action="store_true", help="replace OUT if it exists (never the source)")
    i = sub.add_parser("inspect", help="summarise a checkpoint directory")
    i.add_argument("path", type=Path)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "inspect":
            print(json.dumps(inspect(args.path), indent=2))
            return
        dtype = DTYPES[args.dtype] if args.dtype else None
        if args.command == "from-gguf":
            summary = from_gguf(args.src, args.dst, dtype=dtype, to=args.to, force=args.force)
            types = ", ".join(f"{n} {k}" for k, n in sorted(summary["gguf_types"].items()))
            print(f"wrote {args.dst}: {summary['model_type']} ({'transformers' if args.to == 'hf' else 'jaxmodels'} "
                  f"format) from GGUF {summary['architecture']} ({types}), {summary['tensors']} tensors, "
                  f"{summary['total_size'] / 2**20:.1f} MiB {args.dtype}; tokenizer: "
                  f"{', '.join(summary['tokenizer']) or 'none in the file'}")
            return
        max_shard = parse_size(args.max_shard_size) if args.max_shard_size else None
        if args.verify and getattr(args, "layout", "transformers") != "transformers":
            raise ValueError(f"--verify needs the transformers layout (the {args.layout} layout has no modeling code)")
        if args.command == "from-hf":
            summary = from_hf(args.src, args.dst, model_type=args.model_type, dtype=dtype, max_shard=max_shard,
                              force=args.force)
            hf_dir, ours_dir = args.src, args.dst
        else:
            summary = to_hf(args.src, args.dst, dtype=dtype, max_shard=max_shard, force=args.force,
                            layout=args.layout)
            hf_dir, ours_dir = args.dst, args.src
        print(f"wrote {args.dst}: {summary['model_type']}, {summary['tensors']} tensors, "
              f"{summary['total_size'] / 2**20:.1f} MiB")
        if args.verify:
            from jaxmodels_interop.verify import VerifyError, verify_dirs

            try:
                verify_dirs(hf_dir, ours_dir)
            except VerifyError as e:
                sys.exit(f"error: {e}")
    except (CheckpointError, ValueError, FileNotFoundError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
