"""Train a Hyformer: `python -m training.hyformer --help`.

Default corpus: the Python standard library's own source files, byte-level tokens (no download).
Writes to --out: run.json, orbax checkpoints (params, optimizer state, step; the data position and the
dropout keys follow from the step), metrics.jsonl and the final model (`model/`, loadable with
`jaxmodels.from_pretrained`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels import Hyformer, HyformerConfig, compilation_cache, generate
from jaxmodels.paths import check_destination, expand
from jaxmodels_training.sharding import Placement
from jaxmodels_training.data import Batches, TokenStream, load_documents
from jaxmodels_training.masking import mask_tokens
from jaxmodels_training.cli_args import add_optimisation_args, add_run_args, exit_with_error
from jaxmodels_training.loop import USER_ERRORS, LoopConfig, TrainingError, fit, restore_or_init
from jaxmodels_training.metrics import MetricsLog
from jaxmodels_training.optim import make_optimizer, make_schedule
from jaxmodels_training.rundir import RunDir, RunDirError
from jaxmodels_training.step import make_eval_step, make_train_step
from jaxmodels_training.tokenizer import load_tokenizer

DEMO = dict(preset="small", steps=600, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=60, eval_every=100,
            save_every=200)
SAMPLE_PROMPTS = ("def ", "import ", "class ")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.hyformer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="+", metavar="PATH", help="local text files or globs (default: the stdlib sources)")
    d.add_argument("--dataset", help="a Hugging Face hub dataset name (needs network access)")
    d.add_argument("--dataset-config", help="the hub dataset's configuration name")
    d.add_argument("--text-field", default="text", help="the dataset column holding text")
    d.add_argument("--tokenizer", metavar="DIR", help="a directory with tokenizer.json (default: byte-level)")
    m = p.add_argument_group("model")
    m.add_argument("--task", default="lm", help="lm (causal) or mlm (bidirectional, 15%% masking)")
    m.add_argument("--preset", default="small", help="tiny | small | base")
    m.add_argument("--config", metavar="JSON", help="a HyformerConfig JSON file (instead of --preset)")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute dtype; bfloat16 keeps float32 master weights")
    o = add_optimisation_args(p, steps=1000, batch_size=16, lr=1e-3, warmup_steps=100, weight_decay=0.1)
    o.add_argument("--seq-len", type=int, default=128)
    r = add_run_args(p, demo_help="the `make demo` run: small model, a few minutes, samples")
    r.add_argument("--eval-batches", type=int, default=8)
    r.add_argument("--mesh", help="device mesh axis=size over data, fsdp, tensor, e.g. data=2,fsdp=2 or tensor=4 "
                   "(default: one device; parameters placed by jaxmodels.sharding.DEFAULT_RULES)")
    r.add_argument("--sample-tokens", type=int, default=0, help="after training, sample this many tokens per prompt")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    if argv is not None and "--demo" in argv or argv is None and "--demo" in sys.argv:
        parser.set_defaults(**DEMO, sample_tokens=200)
    args = parser.parse_args(argv)
    if args.task not in ("lm", "mlm"):
        parser.error(f"--task {args.task!r}: training supports 'lm' and 'mlm'")
    for name in ("steps", "batch_size", "seq_len", "eval_batches", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def make_config(args, vocab_size: int) -> HyformerConfig:
    config = HyformerConfig.from_json(args.config) if args.config else HyformerConfig.preset(args.preset)
    if args.config and config.vocab_size < vocab_size:
        raise ValueError(f"{args.config}: vocab_size {config.vocab_size} is smaller than the tokenizer's {vocab_size}")
    config = config if args.config else config.replace(vocab_size=vocab_size)
    if args.seq_len > config.max_seq_len:
        config = config.replace(max_seq_len=args.seq_len) if not args.config else config
        if args.seq_len > config.max_seq_len:
            raise ValueError(f"--seq-len {args.seq_len} exceeds max_seq_len {config.max_seq_len} of {args.config}")
    return config


def run_identity(args, config: HyformerConfig, tokenizer) -> dict:
    data = args.dataset or sorted(args.data or ["<python stdlib>"])
    return {"config": dataclasses.asdict(config), "task": args.task, "steps": args.steps,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr, "warmup_steps": args.warmup_steps,
            "min_lr_ratio": args.min_lr_ratio, "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
            "seed": args.seed, "dtype": args.dtype, "tokenizer": tokenizer.name,
            "data": hashlib.sha256(repr((data, args.dataset_config, args.text_field)).encode()).hexdigest()[:16]}


def loss_fn(model: Hyformer, ids, key, *, task: str, mask_id: int, vocab_size: int):
    """ids [B, T] -> (loss, {}); for mlm the masking and dropout keys derive from `key`."""
    k_mask, k_drop = jax.random.split(key)
    if task == "mlm":
        inputs, labels = mask_tokens(ids, k_mask, mask_id=mask_id, vocab_size=vocab_size)
        return model(inputs, "mlm", labels=labels, dropout_key=k_drop).loss, {}
    return model(ids, "lm", labels=ids, dropout_key=k_drop).loss, {}


def eval_loss_fn(model, ids, key, **kw):
    """As loss_fn, without dropout."""
    if kw["task"] == "mlm":
        inputs, labels = mask_tokens(ids, key, mask_id=kw["mask_id"], vocab_size=kw["vocab_size"])
        return model(inputs, "mlm", labels=labels).loss, {}
    return model(ids, "lm", labels=ids).loss, {}


def train(args) -> dict:
    tokenizer = load_tokenizer(args.tokenizer)
    if args.task == "mlm" and tokenizer.mask_id is None:
        raise ValueError(f"--task mlm needs a mask token; tokenizer {tokenizer.name} has none")
    config = make_config(args, tokenizer.vocab_size)
    placement = Placement.from_args(args.mesh, args.batch_size)
    # The corpus is read and cut before the run directory is touched: a bad corpus leaves --out as it was.
    stream = TokenStream(load_documents(args.data, args.dataset, args.dataset_config, text_field=args.text_field),
                         tokenizer)
    train_batches = Batches(stream.train, args.batch_size, args.seq_len, args.seed, name="train")
    eval_batches = Batches(stream.eval, args.batch_size, args.seq_len, args.seed, shuffle=False, name="eval")
    sources = expand([*(args.data or []), args.tokenizer, args.config])
    if args.metrics_path:  # a metrics file of its own must not be, or lie in, an input either
        check_destination(args.metrics_path, sources, what="--metrics-path")
    run = RunDir(args.out, run_identity(args, config, tokenizer), resume=args.resume, force=args.force,
                 sources=sources)

    model = Hyformer(config, rngs=nnx.Rngs(args.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = make_schedule(args.lr, args.steps, args.warmup_steps, args.min_lr_ratio)
    tx = make_optimizer(schedule, weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    params = placement.params(params)
    opt_state, out_shardings = placement.init_optimizer(tx, params)

    resuming = run.resuming(args.resume)
    state, start = restore_or_init(run, params, opt_state, resume=resuming)
    log = MetricsLog(args.metrics_path or run.metrics_path, resume_step=start if resuming else None)

    compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    kw = dict(task=args.task, mask_id=tokenizer.mask_id if tokenizer.mask_id is not None else 0,
              vocab_size=tokenizer.vocab_size)
    train_step = make_train_step(graphdef, tx, partial(loss_fn, **kw), compute_dtype=compute_dtype,
                                 out_shardings=out_shardings)
    eval_step = make_eval_step(graphdef, partial(eval_loss_fn, **kw), compute_dtype=compute_dtype)
    base_key = jax.random.key(args.seed)
    eval_key = jax.random.fold_in(jax.random.key(args.seed), 2**31 - 1)
    put = placement.batch

    def evaluate(step, params):
        n = min(args.eval_batches, eval_batches.per_epoch)
        losses = [float(eval_step(params, put(eval_batches.batch(i)), jax.random.fold_in(eval_key, i)))
                  for i in range(n)]
        return {"loss": float(np.mean(losses))}

    loop = LoopConfig(steps=args.steps, log_every=args.log_every, eval_every=args.eval_every,
                      save_every=args.save_every, units_per_step=args.batch_size * args.seq_len, name="hyformer")
    try:
        state, history = fit(state, start, loop, run=run, log=log, train_step=train_step,
                             batch=lambda step: put(train_batches.batch(step)),
                             key=lambda step: jax.random.fold_in(base_key, step), lr=schedule, evaluate=evaluate,
                             meta=lambda step: {"data_position": step * args.batch_size, "seed": args.seed})
    finally:
        log.close()  # also on Ctrl-C or a stopped run: the curves picture shows how far it got
    params = state.params
    history["eval"] = [(step, result["loss"]) for step, result in history["eval"]]
    final = nnx.merge(graphdef, params)
    final.save_pretrained(run.model_dir)
    print(f"saved the model to {run.model_dir} (jaxmodels.from_pretrained)", file=sys.stderr)
    if args.sample_tokens:
        sample(final, tokenizer, args.sample_tokens, args.seed)
    run.close()
    return history


def sample(model: Hyformer, tokenizer, n_tokens: int, seed: int) -> None:
    for prompt in SAMPLE_PROMPTS:
        ids = tokenizer.encode(prompt)[None, :]
        n = min(n_tokens, model.config.max_seq_len - ids.shape[1])
        out = generate(model, ids, n, temperature=0.8, top_k=40, seed=seed, eos_token_id=tokenizer.eos_id)
        text = tokenizer.decode(np.asarray(out[0]))
        print(f"--- sample ({prompt!r}, temperature 0.8, top-k 40)\n{text}\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    compilation_cache.enable()
    try:
        history = train(args)
    except USER_ERRORS as e:
        exit_with_error(e)
    if args.demo and history["eval"]:
        first, last = history["eval"][0], history["eval"][-1]
        print(f"demo: eval loss {first[1]:.3f} (step {first[0]}) -> {last[1]:.3f} (step {last[0]}); "
              f"model in {Path(args.out) / 'model'}")


if __name__ == "__main__":
    main()
