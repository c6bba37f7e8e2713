"""Train a V.V.A.L.T classifier or regressor, the whole model: `python -m training.vvalt --help`.

Default data: the task-conditioning demo (training/vvalt_task.py), where the label of an input flips
between paired tasks, so only a model that reads the task vector beats chance. `--data FILE.npz` trains on
your arrays instead. Writes to --out: run.json, orbax checkpoints (params, optimizer state, step; the batch
order follows from the step), metrics.jsonl and the final model (`model/`, loadable with
`jaxmodels.vvalt.load`). Each eval also scores the model with the task vectors shuffled across samples:
near chance there means the task conditioning was learned.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels import compilation_cache
from jaxmodels.vvalt import VVALTConfig, VVALTForRegression, VVALTForSequenceClassification
from jaxmodels_training.cli_args import add_optimisation_args, add_run_args, exit_with_error
from jaxmodels_training.loop import USER_ERRORS, LoopConfig, TrainingError, fit, restore_or_init
from jaxmodels_training.metrics import MetricsLog
from jaxmodels_training.optim import make_optimizer, make_schedule
from jaxmodels_training.rundir import RunDir, RunDirError
from jaxmodels_training.step import make_train_step
from jaxmodels_training.vvalt_task import Split, batch_indices, demo_task, load_npz

TASKS = {"classification": VVALTForSequenceClassification, "regression": VVALTForRegression}
PRESETS = {"demo": dict(input_dim=16, frame_dim=16, task_dim=8), "tiny": {}, "base": {}}
DEMO = dict(steps=400, batch_size=64, lr=3e-3, warmup_steps=20, eval_every=100, save_every=200)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.vvalt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="NPZ", help="arrays inputs [N, I], tasks [N, T], labels (default: the demo task)")
    d.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of --data")
    d.add_argument("--num-tasks", type=int, default=4, help="demo: number of tasks (even; paired opposite)")
    d.add_argument("--train-size", type=int, default=8192, help="demo: training samples")
    d.add_argument("--eval-size", type=int, default=1024, help="demo: held-out samples")
    m = p.add_argument_group("model")
    m.add_argument("--task", default="classification", help="classification | regression")
    m.add_argument("--preset", default="demo", help="demo (I 16, F 16, T 8) | tiny | base (the seed's sizes)")
    m.add_argument("--config", metavar="JSON", help="a VVALTConfig JSON file (instead of --preset)")
    m.add_argument("--num-labels", type=int, help="classes (classification, default 2) or outputs (regression, 1)")
    add_optimisation_args(p, steps=1000, batch_size=64, lr=3e-3, warmup_steps=50, weight_decay=0.0,
                          seed_help="data, batch order and head initialisation")
    add_run_args(p, demo_help="a short demo run of the task-conditioning problem")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    if "--demo" in (sys.argv if argv is None else argv):
        parser.set_defaults(**DEMO)
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"--task {args.task!r}: choose one of {sorted(TASKS)}")
    if args.preset not in PRESETS:
        parser.error(f"--preset {args.preset!r}: choose one of {sorted(PRESETS)}")
    for name in ("steps", "batch_size", "log_every", "train_size", "eval_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.eval_fraction < 1:
        parser.error(f"--eval-fraction must lie in (0, 1), got {args.eval_fraction}")
    return args


def make_config(args) -> VVALTConfig:
    if args.config:
        config = VVALTConfig.from_json(args.config)
    else:
        config = VVALTConfig.preset("tiny" if args.preset == "tiny" else "base", **PRESETS[args.preset])
    num_labels = args.num_labels or (config.num_labels if args.config else 2 if args.task == "classification" else 1)
    if args.task == "classification" and num_labels < 2:
        raise ValueError(f"classification needs num_labels >= 2, got {num_labels}")
    return config.replace(num_labels=num_labels)


def load_data(args, config: VVALTConfig) -> tuple[Split, Split]:
    if args.data:
        full = load_npz(args.data, args.task, config.input_dim, config.task_dim, config.num_labels)
        order = np.random.default_rng([args.seed, 3]).permutation(len(full))
        n_eval = max(1, int(round(args.eval_fraction * len(full))))
        return Split(*full.take(order[n_eval:])), Split(*full.take(order[:n_eval]))
    if args.task == "classification" and config.num_labels != 2:
        raise ValueError(f"the demo task is binary: use --num-labels 2 for classification, not {config.num_labels}")
    if args.task == "regression" and config.num_labels != 1:
        raise ValueError(f"the demo regression has one target: use --num-labels 1, not {config.num_labels}")
    make = partial(demo_task, args.task, config.input_dim, config.task_dim, num_tasks=args.num_tasks, seed=args.seed)
    return make(args.train_size, split_seed=0), make(args.eval_size, split_seed=1)


def loss_fn(model, batch, key):
    """batch = (x [B, I], t [B, T], y) -> (loss, {})."""
    del key  # V.V.A.L.T has no dropout: the step is deterministic
    x, t, y = batch
    return model(x, t, labels=y).loss, {}


def eval_metrics(model, split: Split, task: str, seed: int) -> dict[str, float]:
    """Loss and accuracy (or MSE) on a split, with the true task vectors and with them shuffled."""
    shuffled = split.tasks[np.random.default_rng([seed, 4]).permutation(len(split))]
    out = {}
    for suffix, tasks in (("", split.tasks), ("_shuffled_tasks", shuffled)):
        res = model(split.inputs, tasks, labels=split.labels)
        if task == "classification":
            out["accuracy" + suffix] = float(jnp.mean(jnp.argmax(res.logits, -1) == split.labels))
        else:
            out["mse" + suffix] = float(res.loss)
        out["loss" + suffix] = float(res.loss)
    if task == "regression":
        out["mse_predicting_zero"] = float(np.mean(split.labels.astype(np.float64) ** 2))
    return out


def run_identity(args, config: VVALTConfig) -> dict:
    return {"config": json.loads(config.to_json_string()), "task": args.task, "data": args.data or "demo", "num_tasks": args.num_tasks,
            "train_size": args.train_size, "eval_size": args.eval_size, "eval_fraction": args.eval_fraction,
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
            "min_lr_ratio": args.min_lr_ratio, "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
            "seed": args.seed}


def train(args) -> dict:
    config = make_config(args)
    train_split, eval_split = load_data(args, config)
    if args.batch_size > len(train_split):
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(train_split)} training samples")
    run = RunDir(args.out, run_identity(args, config), resume=args.resume, force=args.force,
                 sources=[args.data, args.config])
    model = TASKS[args.task](config, rngs=nnx.Rngs(args.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    schedule = make_schedule(args.lr, args.steps, args.warmup_steps, args.min_lr_ratio)
    tx = make_optimizer(schedule, weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    opt_state = jax.jit(tx.init)(params)
    resuming = run.resuming(args.resume)
    state, start = restore_or_init(run, params, opt_state, resume=resuming)
    log = MetricsLog(args.metrics_path or run.metrics_path, resume_step=start if resuming else None)
    train_step = make_train_step(graphdef, tx, loss_fn)
    key = jax.random.key(args.seed)

    def evaluate(step, params):
        return eval_metrics(nnx.merge(graphdef, params), eval_split, args.task, args.seed)

    def batch(step):
        return tuple(jnp.asarray(a) for a in
                     train_split.take(batch_indices(len(train_split), args.batch_size, step, args.seed)))

    # One sample is one input vector; tokens_per_s (the shared metrics schema) counts samples here too.
    loop = LoopConfig(steps=args.steps, log_every=args.log_every, eval_every=args.eval_every,
                      save_every=args.save_every, units_per_step=args.batch_size, unit="samples",
                      name=f"vvalt-{args.task}")
    try:
        state, history = fit(state, start, loop, run=run, log=log, train_step=train_step, batch=batch,
                             key=lambda step: key, lr=schedule, evaluate=evaluate,
                             meta=lambda step: {"data_position": step * args.batch_size, "seed": args.seed})
    finally:
        log.close()  # also on Ctrl-C or a stopped run: the curves picture shows how far it got
    params = state.params
    nnx.merge(graphdef, params).save_pretrained(run.model_dir)
    print(f"saved the model to {run.model_dir} (jaxmodels.vvalt.load)", file=sys.stderr)
    run.close()
    return history


def main(argv=None) -> None:
    args = parse_args(argv)
    compilation_cache.enable()
    try:
        history = train(args)
    except USER_ERRORS as e:
        exit_with_error(e)
    if history["eval"]:
        step, metrics = history["eval"][-1]
        if args.task == "classification":
            print(f"step {step}: eval accuracy {metrics['accuracy']:.3f} with the task vectors, "
                  f"{metrics['accuracy_shuffled_tasks']:.3f} with them shuffled (a task-blind model: 0.5 on the demo)")
        else:
            print(f"step {step}: eval MSE {metrics['mse']:.4f} with the task vectors, "
                  f"{metrics['mse_shuffled_tasks']:.4f} shuffled, {metrics['mse_predicting_zero']:.4f} predicting 0")


if __name__ == "__main__":
    main()
