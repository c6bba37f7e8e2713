"""Fine-tune a causal language model: `python -m training.lm --model DIR --chat FILE --out RUN` (see --help).

MODEL is anything `jaxmodels.from_pretrained` loads: one of our checkpoints (or a training run directory), a
Hugging Face directory of a registered family (Llama, Qwen2, Qwen3, Mistral, Gemma 3), or a .gguf file. Data:
chat JSONL ({"messages": [{"role", "content"}, ...]} per line; the loss counts the assistant tokens only), or
text (--data files, --dataset from the hub) for continued pretraining. Full fine-tuning, or LoRA with
--lora-rank. Writes to --out: run.json, orbax checkpoints, metrics.jsonl, and at the end model/ (full, or
LoRA with --merge; `jaxmodels-convert to-hf OUT/model DST` exports it), adapter/ and peft-adapter/ (LoRA).
Usage, formats and multi-host launches: docs/training-lm.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels import Hyformer, LlamaForCausalLM, compilation_cache, lora
from jaxmodels.paths import expand
from jaxmodels.pretrained import from_pretrained, gguf_in, model_dir
from jaxmodels.tokenizer import ByteTokenizer
from jaxmodels_interop.chat import load_tokenizer
from jaxmodels_training import lm_data, lm_dist
from jaxmodels_training.cli_args import add_optimisation_args, add_run_dir_args
from jaxmodels_training.data import load_documents
from jaxmodels_training.lm_step import BatchPlacer, make_eval_step, make_train_step
from jaxmodels_training.loop import USER_ERRORS, LoopConfig, TrainState, fit, restore_or_init
from jaxmodels_training.optim import make_optimizer, make_schedule
from jaxmodels_training.sharding import Placement

DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
LR = {"full": 2e-5, "lora": 2e-4}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.lm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="our checkpoint, a Hugging Face directory or a .gguf file")
    m.add_argument("--tokenizer", metavar="DIR", help="a tokenizer directory (default: the model's own; 'bytes' "
                   "for a byte-level Hyformer)")
    m.add_argument("--chat-template", metavar="FILE", help="a Jinja chat template replacing the tokenizer's")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute dtype; bfloat16 keeps float32 master weights (LoRA: a bfloat16 frozen base)")
    m.add_argument("--remat", action="store_true", help="activation checkpointing: recompute each block's "
                   "activations in the backward pass (less memory, ~1/3 more compute)")
    d = p.add_argument_group("data (one of --chat, --data, --dataset)")
    d.add_argument("--chat", metavar="FILE", help="chat JSONL: {\"messages\": [{\"role\": ..., \"content\": ...}]} "
                   "per line; loss on the assistant turns")
    d.add_argument("--data", nargs="+", metavar="PATH", help="text files or globs (one document per file)")
    d.add_argument("--dataset", help="a Hugging Face hub dataset (needs network access)")
    d.add_argument("--dataset-config", help="the hub dataset's configuration name")
    d.add_argument("--text-field", default="text", help="the dataset column holding text")
    d.add_argument("--eval-data", nargs="+", metavar="PATH", help="held-out data in the training format (chat "
                   "JSONL, or text files); default: --eval-fraction of the training data")
    d.add_argument("--eval-fraction", type=float, default=0.05, help="share held out when there is no --eval-data "
                   "(conversations drawn by --seed; every n-th text document); 0: no evaluation")
    d.add_argument("--pack", action="store_true", help="chat: several conversations per row (none split) instead "
                   "of one padded row each; they see the earlier ones in their row (docs/training-lm.md)")
    o = add_optimisation_args(p, steps=1000, batch_size=8, lr=None, warmup_steps=50, weight_decay=0.0)
    o.add_argument("--seq-len", type=int, default=512)
    o.add_argument("--grad-accum", type=int, default=1, metavar="N",
                   help="micro-batches of --batch-size rows per optimizer step (token-weighted, as one batch)")
    a = p.add_argument_group("LoRA (full fine-tuning without --lora-rank)")
    a.add_argument("--lora-rank", type=int, default=0, metavar="R")
    a.add_argument("--lora-alpha", type=float, metavar="A", help="the update is scaled by A / R (default 2 R)")
    a.add_argument("--lora-targets", default=DEFAULT_TARGETS, help=f"Linear layer names (default {DEFAULT_TARGETS})")
    a.add_argument("--merge", action="store_true", help="also write the base with the adapters merged to OUT/model")
    r = p.add_argument_group("run")
    add_run_dir_args(r)
    r.add_argument("--eval-every", type=int, default=100, help="evaluate every this many steps and at the end "
                   "(0: never)")
    r.add_argument("--eval-batches", type=int, default=16, help="at most this many evaluation batches")
    r.add_argument("--save-every", type=int, default=500)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--metrics-path", help="JSONL metrics file (default: OUT/metrics.jsonl)")
    s = p.add_argument_group("devices")
    s.add_argument("--mesh", help="device mesh axis=size over data, fsdp, tensor, e.g. fsdp=4 or data=2,tensor=2 "
                   "(default: one device); on several processes it spans all their devices")
    lm_dist.add_args(s)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = [name for name in ("chat", "data", "dataset") if getattr(args, name)]
    if len(sources) != 1:
        parser.error("give exactly one data source: --chat FILE, --data FILES or --dataset NAME"
                     + (f" (got {', '.join('--' + s for s in sources)})" if sources else ""))
    for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_batches", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seq_len < 2:
        parser.error("--seq-len must be >= 2 (a token and the one it predicts)")
    if not 0 <= args.eval_fraction < 1:
        parser.error(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    if args.lora_rank < 0:
        parser.error(f"--lora-rank must be >= 1 (or 0: full fine-tuning), got {args.lora_rank}")
    if not args.lora_rank and (args.merge or args.lora_alpha is not None):
        parser.error("--merge and --lora-alpha need --lora-rank")
    if args.pack and not args.chat:
        parser.error("--pack applies to --chat data (text is always cut into full windows)")
    args.mode = "lora" if args.lora_rank else "full"
    args.lr = LR[args.mode] if args.lr is None else args.lr
    if args.lora_rank and args.lora_alpha is None:
        args.lora_alpha = 2.0 * args.lora_rank
    return args


def load_model(args, placement: Placement, dtype: str):
    model = from_pretrained(args.model, dtype=dtype, mesh=placement.mesh, rules=placement.rules)
    if not isinstance(model, (LlamaForCausalLM, Hyformer)):
        raise ValueError(f"{args.model} holds a {type(model).__name__}; training.lm fine-tunes causal language "
                         f"models (Llama, Qwen2, Qwen3, Mistral, Gemma 3, Hyformer)")
    return model.use_remat(True) if args.remat else model


def weights_fingerprint(path: str) -> str:
    """A digest of the weight files' names and sizes (cheap; a different checkpoint gives another)."""
    found = gguf_in(path)
    files = [found] if found is not None else sorted(model_dir(path).glob("*.safetensors"))
    return hashlib.sha256(repr([(f.name, f.stat().st_size) for f in files]).encode()).hexdigest()[:16]


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class Data:
    train: lm_data.Rows
    eval: lm_data.Rows | None
    notes: dict[str, Any]


def _encoder(tokenizer):
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode
    return lambda text: tokenizer.hf(text, add_special_tokens=True)["input_ids"]


def build_data(args, tokenizer, vocab_size: int) -> Data:
    pad = next((i for i in (tokenizer.pad_id, tokenizer.eos_id) if i is not None), 0)
    if args.chat:
        if isinstance(tokenizer, ByteTokenizer):
            raise lm_data.DataError("--chat needs a tokenizer with a chat template, not the byte-level one")
        renderer = lm_data.ChatRenderer(tokenizer.hf, tokenizer.name)
        examples = lm_data.render_chat(args.chat, renderer)
        if args.eval_data:
            held = [e for path in args.eval_data for e in lm_data.render_chat(path, renderer)]
        else:
            examples, held = lm_data.split_examples(examples, args.eval_fraction, args.seed)
        rows, notes = lm_data.chat_rows(examples, args.seq_len, pad, pack=args.pack, vocab_size=vocab_size,
                                        name="training")
        eval_rows = None
        if held:
            eval_rows, eval_notes = lm_data.chat_rows(held, args.seq_len, pad, pack=args.pack, vocab_size=vocab_size,
                                                      name="held-out")
            notes["eval_conversations"] = eval_notes["conversations"]
        notes["assistant_marking"] = "generation markers" if renderer.marked else "rendered prefixes"
        return Data(rows, eval_rows, notes)
    docs = load_documents(args.data, args.dataset, args.dataset_config, text_field=args.text_field)
    if args.eval_data:
        held = load_documents(args.eval_data)
    else:
        docs, held = lm_data.split_documents(docs, args.eval_fraction)
    encode = _encoder(tokenizer)
    rows = lm_data.text_rows(lm_data.encode_documents(docs, encode, tokenizer.eos_id), args.seq_len,
                             vocab_size=vocab_size, name="training")
    eval_rows = None
    if held:
        eval_rows = lm_data.text_rows(lm_data.encode_documents(held, encode, tokenizer.eos_id), args.seq_len,
                                      vocab_size=vocab_size, name="held-out")
    return Data(rows, eval_rows, {"documents": len(docs), "eval_documents": len(held)})


def run_identity(args, model, tokenizer, data: Data, lora_config: lora.LoraConfig | None) -> dict:
    """What makes a run: resuming with any of these changed is refused (the mesh, --remat and the run
    flags may change)."""
    template = getattr(getattr(tokenizer, "hf", None), "chat_template", None) if args.chat else None
    config = {f"model_config.{k}": v for k, v in model.config.to_dict().items() if k != "model_type"}
    return {"model": str(Path(args.model).resolve()), "model_type": model.config.model_type, **config,
            "weights": weights_fingerprint(args.model),
            "tokenizer": tokenizer.name, "chat_template": template and hashlib.sha256(template.encode()).hexdigest()[:16],
            "data": _digest(data.train.input_ids, data.train.labels),
            "eval_data": None if data.eval is None else _digest(data.eval.input_ids, data.eval.labels),
            "seq_len": args.seq_len, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
            "steps": args.steps, "lr": args.lr, "warmup_steps": args.warmup_steps, "min_lr_ratio": args.min_lr_ratio,
            "weight_decay": args.weight_decay, "grad_clip": args.grad_clip, "seed": args.seed, "dtype": args.dtype,
            "pack": args.pack, "lora": None if lora_config is None else lora_config.to_dict()}


@dataclasses.dataclass
class Outcome:
    """What `train` returns: the loss history, the trained parameters (or adapters), their optimizer state,
    and the frozen base (LoRA; else None)."""

    history: dict
    trainable: Any
    opt_state: Any
    frozen: Any


def train(args) -> Outcome:
    lm_dist.initialize(args)
    placement = Placement.from_args(args.mesh, args.batch_size)
    tokenizer, _ = load_tokenizer(Path(args.model), args.tokenizer)
    if args.chat_template:
        if isinstance(tokenizer, ByteTokenizer):
            raise ValueError("--chat-template needs a Hugging Face tokenizer, not the byte-level one")
        tokenizer.hf.chat_template = Path(args.chat_template).read_text()
    # LoRA in bfloat16 keeps the frozen base in bfloat16 (half the memory); every trained value stays float32.
    base_dtype = "bfloat16" if args.mode == "lora" and args.dtype == "bfloat16" else "float32"
    model = load_model(args, placement, base_dtype)
    data = build_data(args, tokenizer, model.config.vocab_size)
    lora_config = None
    if args.mode == "lora":
        lora_config = lora.LoraConfig(args.lora_rank, args.lora_alpha, tuple(t.strip() for t in
                                      args.lora_targets.split(",") if t.strip()), base_model=str(args.model),
                                      model_type=model.config.model_type)
        lora.targets(model, lora_config)  # bad targets or rank: refused before the run directory is touched
    rows = lm_data.RowSchedule(len(data.train), args.batch_size, args.grad_accum, args.seed)
    run = lm_dist.run_dir(args.out, run_identity(args, model, tokenizer, data, lora_config), resume=args.resume,
                          force=args.force, sources=expand([args.model, args.tokenizer, args.chat_template, args.chat,
                                                            *(args.data or []), *(args.eval_data or [])]))
    graphdef, params = nnx.split(model, nnx.Param)
    if lora_config is not None:
        trainable, frozen = placement.params(lora.init(model, lora_config, key=jax.random.key(args.seed))), params
    else:
        trainable, frozen = params, None
    schedule = make_schedule(args.lr, args.steps, args.warmup_steps, args.min_lr_ratio)
    tx = make_optimizer(schedule, weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    opt_state, out_shardings = placement.init_optimizer(tx, trainable)
    state, start = restore_or_init(run, trainable, opt_state, resume=args.resume)
    log = lm_dist.metrics_log(args.metrics_path or run.metrics_path, resume_step=start if args.resume else None)
    lm_dist.report(describe(args, model, data, trainable, lora_config))

    compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    scale = None if lora_config is None else lora_config.scale
    step_fn = make_train_step(graphdef, tx, accum=args.grad_accum, lora_scale=scale, compute_dtype=compute_dtype,
                              out_shardings=out_shardings)
    eval_fn = make_eval_step(graphdef, lora_scale=scale, compute_dtype=compute_dtype)
    put = BatchPlacer(placement.mesh, placement.rules)
    base_key = jax.random.key(args.seed)
    batch = lambda step: put(data.train, rows.step(step))  # noqa: E731
    if start < args.steps:  # compiled once, ahead of the loop, to report its memory
        step_fn = step_fn.lower(state.params, state.opt_state, batch(start), base_key, frozen).compile()
        lm_dist.report(compiled_memory(step_fn))
    eval_index = [] if data.eval is None else lm_data.eval_batches(len(data.eval), args.batch_size, args.eval_batches)

    def evaluate(step, trainable):
        total = count = 0
        for index in eval_index:
            s, n = eval_fn(trainable, put(data.eval, index), frozen)
            total, count = total + float(s), count + int(n)
        return {"loss": total / max(count, 1), "tokens": count}

    loop = LoopConfig(steps=args.steps, log_every=args.log_every, eval_every=args.eval_every if eval_index else 0,
                      save_every=args.save_every, units_per_step=rows.per_step * args.seq_len, name="lm")
    try:
        state, history = fit(state, start, loop, run=run, log=log,
                             train_step=lambda p, o, b, k: step_fn(p, o, b, k, frozen), batch=batch,
                             key=lambda step: jax.random.fold_in(base_key, step), lr=schedule,
                             evaluate=evaluate if eval_index else None,
                             meta=lambda step: {"rows_seen": step * rows.per_step, "seed": args.seed})
    finally:
        log.close()  # also on Ctrl-C or a stopped run: the curves picture shows how far it got
    history["eval"] = [(step, result["loss"]) for step, result in history["eval"]]
    write_outputs(args, run, placement, graphdef, state, frozen, lora_config, tokenizer)
    run.close()
    return Outcome(history, state.params, state.opt_state, frozen)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def compiled_memory(compiled) -> str:
    """One line on a compiled step's memory per device, as XLA reports it."""
    found = compiled.memory_analysis()
    if found is None:
        return "train step compiled"
    return (f"train step compiled: per device {_size(found.argument_size_in_bytes)} arguments, "
            f"{_size(found.output_size_in_bytes)} outputs ({_size(found.alias_size_in_bytes)} of them donated), "
            f"{_size(found.temp_size_in_bytes)} temporaries")


def describe(args, model, data: Data, trainable, lora_config) -> str:
    n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainable))
    n_model = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    what = (f"LoRA r={lora_config.rank} alpha={lora_config.alpha:g} on {','.join(lora_config.targets)}: "
            f"{n_train:,} trained parameters ({100 * n_train / n_model:.2f}% of {n_model:,})" if lora_config
            else f"full fine-tuning of {n_model:,} parameters")
    rows = f"{len(data.train)} training rows, {data.train.loss_tokens():,} loss tokens"
    held = "no evaluation" if data.eval is None else f"{len(data.eval)} held-out rows"
    notes = ", ".join(f"{k} {v}" for k, v in data.notes.items())
    return f"{model.config.model_type} ({type(model).__name__}), {what}; {rows}, {held} ({notes})"


def write_outputs(args, run, placement: Placement, graphdef, state: TrainState, frozen, lora_config,
                  tokenizer) -> None:
    """OUT/model (full; LoRA with --merge), OUT/adapter and OUT/peft-adapter (LoRA), with the tokenizer files
    beside the model and the peft adapter. Every process takes part in merging and gathering sharded arrays;
    the first one writes."""
    written = []

    def save_model(model):
        graph, params = nnx.split(model, nnx.Param)
        whole = nnx.merge(graph, lm_dist.gather(params))
        if lm_dist.is_primary():
            whole.save_pretrained(run.model_dir)
            written.append(run.model_dir)

    if lora_config is None:
        save_model(nnx.merge(graphdef, state.params))
    else:
        adapters = lm_dist.gather(state.params)
        base = nnx.merge(graphdef, frozen)  # the exports read its shapes and family only
        if lm_dist.is_primary():
            lora.save(run.out / "adapter", adapters, lora_config)
            lora.export_peft(run.out / "peft-adapter", base, adapters, lora_config)
            written += [run.out / "adapter", run.out / "peft-adapter"]
        if args.merge:
            if args.dtype == "bfloat16":  # merge into the float32 weights, not the bfloat16 copy trained against
                base = load_model(args, placement, "float32")
            save_model(lora.merge(base.use_remat(False), state.params, lora_config))
    if lm_dist.is_primary():
        if hasattr(tokenizer, "hf"):
            for directory in written:
                if directory.name != "adapter":
                    tokenizer.hf.save_pretrained(directory)
        lm_dist.report("wrote " + ", ".join(str(d) for d in written))
    lm_dist.barrier("jaxmodels_training.lm:outputs")


def main(argv=None) -> None:
    args = parse_args(argv)
    compilation_cache.enable()
    try:
        train(args)
    except USER_ERRORS as e:
        lm_dist.exit_with_error(" ".join(str(e).split()))


if __name__ == "__main__":
    main()
