"""`jaxmodels-convert`: move checkpoints between our Flax models and Hugging Face PyTorch checkpoints.

  jaxmodels-convert from-hf SRC DST   a transformers checkpoint (or the original Hyformer's) -> ours
  jaxmodels-convert to-hf SRC DST     ours (a model dir or a training run dir) -> a transformers checkpoint
  jaxmodels-convert inspect PATH      what a checkpoint directory holds

Conversions stream one tensor at a time, check every key and shape against the target model before
writing anything, write into a temporary sibling renamed at the end, and never replace an existing
DST without --force. `--verify` runs both frameworks on random tokens and fails past the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxmodels.checkpoint import native_config
from jaxmodels.hf.convert import param_shapes, plan_import, stored_key
from jaxmodels.hf.families import FAMILIES
from jaxmodels.hf.source import CheckpointError, SafetensorsCheckpoint
from jaxmodels.hf.writer import PlannedTensor, parse_size, write_shards
from jaxmodels.io import atomic_directory
from jaxmodels.registry import load_config

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
# Both frameworks compute in float32 from the same (possibly bf16-rounded) weights.
TOLERANCE = 1e-4


class VerifyError(RuntimeError):
    """The converted checkpoint does not reproduce the source's logits."""


def _cast(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    if dtype is None or not np.issubdtype(array.dtype, np.floating) and array.dtype != ml_dtypes.bfloat16:
        return array
    return np.asarray(jnp.asarray(array).astype(dtype)) if array.dtype != dtype else array


def open_weights(src: Path):
    """A safetensors checkpoint, or a PyTorch .bin one read with torch.load(weights_only=True)."""
    try:
        return SafetensorsCheckpoint(src)
    except CheckpointError as e:
        if "pytorch_model.bin" not in str(e) and "model.pt" not in str(e):
            raise
    from jaxmodels_interop.torch_bin import TorchBinCheckpoint

    return TorchBinCheckpoint(src)


def resolve_native(src: Path) -> Path:
    """A model directory, or a training run directory holding one in model/."""
    if (src / "run.json").is_file() and (src / "model" / "config.json").is_file():
        return src / "model"
    return src


def from_hf(src: Path, dst: Path, *, model_type=None, dtype=None, max_shard=None, force=False) -> dict:
    family, config, native = load_config(src, model_type)
    if native:
        raise ValueError(f"{src} is already a jaxmodels checkpoint; use `to-hf` to export it")
    config_cls, model_cls = family.classes()
    shapes = param_shapes(nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0))))
    ckpt = open_weights(src)
    plan = plan_import(shapes, ckpt, family.table, tied=family.tied(config))
    tensors = []
    for step in plan:
        stored = np.dtype(ckpt.numpy_dtype(step.stored)) if hasattr(ckpt, "numpy_dtype") else None
        out_dtype = dtype or stored or np.dtype(np.float32)
        tensors.append(PlannedTensor(step.ours, step.our_shape, out_dtype,
                                     lambda s=step, d=out_dtype: _cast(s.load(ckpt), d)))
    with atomic_directory(dst, overwrite=force) as tmp:
        index = write_shards(tensors, tmp, max_shard_bytes=max_shard, metadata={"format": "jaxmodels"})
        (tmp / "config.json").write_text(json.dumps(native_config(config), indent=2, sort_keys=True) + "\n")
    return {"model_type": family.model_type, "tensors": len(tensors), "total_size": index["metadata"]["total_size"]}


def to_hf(src: Path, dst: Path, *, dtype=None, max_shard=None, force=False, layout: str = "transformers") -> dict:
    src = resolve_native(src)
    family, config, native = load_config(src)
    if not native:
        raise ValueError(f"{src} is not a jaxmodels checkpoint (its config.json has no jaxmodels_version); "
                         f"`from-hf` converts Hugging Face checkpoints")
    _, model_cls = family.classes()
    shapes = param_shapes(nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0))))
    ckpt = SafetensorsCheckpoint(src)
    plan = plan_import(shapes, ckpt, None)
    tensors = []
    for step in plan:
        key = stored_key(step.ours, family.table)
        transform = family.table.to_hf(step.ours)[1]
        out_dtype = dtype or np.dtype(ckpt.numpy_dtype(step.ours))
        tensors.append(PlannedTensor(key, transform.hf_shape(step.our_shape), out_dtype,
                                     lambda s=step, t=transform, d=out_dtype: _cast(t.to_hf(ckpt.get(s.ours)), d)))
    hf_config = family.config_to_hf(config)
    if family.model_type == "hyformer":
        hf_config, tensors = _hyformer_layout(config, hf_config, tensors, layout)
    elif layout != "transformers":
        raise ValueError(f"--layout {layout!r} exists only for hyformer")
    with atomic_directory(dst, overwrite=force) as tmp:
        if family.model_type == "hyformer" and layout == "transformers":
            from jaxmodels_interop.hf_hyformer import export_code

            hf_config["auto_map"] = export_code(tmp)
        tensors.sort(key=lambda t: t.key)
        index = write_shards(tensors, tmp, max_shard_bytes=max_shard, metadata={"format": "pt"})
        if layout == "transformers":
            hf_config["dtype"] = {v: k for k, v in DTYPES.items()}.get(tensors[0].dtype, "float32")
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return {"model_type": family.model_type, "tensors": len(tensors), "total_size": index["metadata"]["total_size"]}


def _hyformer_layout(config, hf_config, tensors, layout):
    """transformers layout: our twin's config + auto_map, tied heads left out (transformers re-ties them).
    original layout: only the original's config fields, and heads.lm / heads.mlm written as copies."""
    if layout == "transformers":
        return hf_config, tensors
    if layout != "original":
        raise ValueError(f"--layout {layout!r}: expected 'transformers' or 'original'")
    original = ("vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len", "attn_dropout", "resid_dropout", "eps",
                "num_prediction_tasks")
    extras = {k: v for k, v in config.to_dict().items() if k not in original and k != "model_type"}
    defaults = type(config)(vocab_size=config.vocab_size).to_dict()
    changed = sorted(k for k, v in extras.items() if v != defaults[k])
    if changed:
        raise ValueError(f"the original Hyformer config cannot represent {changed}; use --layout transformers")
    embed = next(t for t in tensors if t.key == "embed.weight")
    heads = [PlannedTensor(k, embed.shape, embed.dtype, embed.produce) for k in ("heads.lm.weight", "heads.mlm.weight")]
    return {k: config.to_dict()[k] for k in original}, tensors + heads


def inspect(path: Path) -> dict:
    path = resolve_native(path)
    family, config, native = load_config(path)
    weights = open_weights(path)
    dtypes: dict[str, int] = {}
    params = 0
    for key in weights.keys():
        dtypes[weights.dtype(key)] = dtypes.get(weights.dtype(key), 0) + 1
        params += int(np.prod(weights.shape(key)))
    return {"path": str(path), "format": "jaxmodels" if native else "huggingface", "model_type": family.model_type,
            "config": config.to_dict(), "tensors": len(weights.keys()), "parameters": params, "dtypes": dtypes,
            "files": list(getattr(weights, "files", [])), "bytes": weights.total_bytes()}


def verify(hf_dir: Path, ours_dir: Path, *, tolerance: float, seed: int = 0) -> float:
    """Max |logits_torch - logits_jax| on random tokens, both sides in float32."""
    import torch
    import transformers

    import jaxmodels_interop.hf_hyformer  # noqa: F401  (registers model_type "hyformer" with the Auto classes)
    from jaxmodels.registry import from_pretrained

    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()
    ours = from_pretrained(resolve_native(ours_dir), dtype=jnp.float32)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True,
                                                               dtype=torch.float32).eval()
    spec = ours.spec
    ids = np.random.default_rng(seed).integers(0, spec.vocab_size, (2, min(64, spec.max_seq_len)))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.float().numpy()
    got = np.asarray(ours(jnp.asarray(ids)).logits, np.float32)
    diff = float(np.max(np.abs(got - expected)))
    print(f"verify: max |logits difference| = {diff:.3g} over {ids.size} tokens (tolerance {tolerance:g})")
    if not diff <= tolerance:
        raise VerifyError(f"logits differ by {diff:.3g}, more than the tolerance {tolerance:g}")
    return diff


def _is_vvalt(args) -> bool:
    from jaxmodels.hf.families import read_config

    return (getattr(args, "model_type", None) == "vvalt"
            or read_config(resolve_native(args.src)).get("model_type") == "vvalt")


def _convert_vvalt(args, dtype, max_shard) -> None:
    """V.V.A.L.T has its own exporter (three model classes, the twin's modeling code)."""
    from jaxmodels_interop import vvalt_convert

    convert = vvalt_convert.from_hf if args.command == "from-hf" else vvalt_convert.to_hf
    summary = convert(args.src, args.dst, force=args.force, max_shard_bytes=max_shard, dtype=dtype)
    print(f"wrote {args.dst}: vvalt, {summary['tensors']} tensors, {summary['total_size'] / 2**20:.1f} MiB")
    if args.verify:
        hf_dir, ours_dir = (args.src, args.dst) if args.command == "from-hf" else (args.dst, args.src)
        vvalt_convert.verify_dirs(hf_dir, resolve_native(ours_dir))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmodels-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("from-hf", "a Hugging Face checkpoint directory -> ours"),
                            ("to-hf", "our checkpoint (or training run) directory -> a Hugging Face one")):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("src", type=Path)
        c.add_argument("dst", type=Path)
        c.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating-point tensors (default: keep)")
        c.add_argument("--max-shard-size", help="e.g. 2GB: write shards and model.safetensors.index.json")
        c.add_argument("--verify", action="store_true", help="compare logits of both frameworks afterwards")
        c.add_argument("--force", action="store_true", help="replace DST if it exists")
        if name == "from-hf":
            c.add_argument("--model-type", choices=sorted([*FAMILIES, "vvalt"]), help="when config.json does not say")
        else:
            c.add_argument("--layout", default="transformers", choices=["transformers", "original"],
                           help="hyformer only: our transformers twin (trust_remote_code), or the original's files")
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
        max_shard = parse_size(args.max_shard_size) if args.max_shard_size else None
        if _is_vvalt(args):
            _convert_vvalt(args, dtype, max_shard)
            return
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
            if getattr(args, "layout", "transformers") == "original":
                raise ValueError("--verify needs the transformers layout (the original's files have no modeling code)")
            verify(hf_dir, ours_dir, tolerance=TOLERANCE)
    except VerifyError as e:
        sys.exit(f"error: {e}")
    except (CheckpointError, ValueError, FileNotFoundError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
