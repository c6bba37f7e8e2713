"""Transformer² SVF experts: `python -m training.svf train ...` and `python -m training.svf adapt ...`.

train: rollouts with our jitted generate (greedy as the official code, or sampled), task rewards (+-1 exact
match), REINFORCE with KL(ref || pi) or PPO (clipped surrogate, group-normalised advantages, several epochs
per batch); optax Adam (lr 2e-3, gradient clipping); early stopping on validation accuracy. Writes to --out:
run.json, orbax checkpoints (z and optimizer state), metrics.jsonl, expert.safetensors (the best validation
z, keyed by Hugging Face parameter names).

adapt: prompt-based, classifier-based and few-shot (CEM) adaptation with trained experts; see --help.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from jaxmodels import compilation_cache
from jaxmodels.pretrained import from_pretrained
from jaxmodels.svf import DEFAULT_PATTERN, SVFWrapper
from jaxmodels_training.metrics import MetricsLog, progress
from jaxmodels_training.cli_args import add_run_dir_args, exit_with_error
from jaxmodels_training.loop import USER_ERRORS, TrainingError
from jaxmodels_training.rundir import RunDir
from jaxmodels_training.svf_chat_tasks import CHAT_DOMAINS, file_split, load_task_file, strict_match
from jaxmodels_training.svf_chat_tasks import split as chat_split
from jaxmodels_training.svf_lora import LoRAPolicy
from jaxmodels_training.svf_rl import PromptCodec, RewardError, SVFPPOTrainer
from jaxmodels_training.svf_tasks import get_task, split
from jaxmodels_training.tokenizer import load_tokenizer


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a checkpoint directory (ours or Hugging Face Llama/Qwen2)")
    p.add_argument("--tokenizer", metavar="DIR", help="a directory with tokenizer.json (default: byte-level)")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, help="regex over our parameter paths (default: MLP matrices)")
    p.add_argument("--svd-cache", metavar="DIR", help="cache the SVD here (safetensors)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--task", help="a task of training.svf_tasks (arith, reverse, sort, upper) or, with a chat "
                                  "--tokenizer, a chat domain of training.svf_chat_tasks (arithmetic, letters, "
                                  "sentiment)")
    p.add_argument("--task-file", metavar="JSONL", help="questions and answers of your own, one "
                   "{\"question\": ..., \"answer\": ...} per line, asked through the tokenizer's chat template "
                   "(a quarter of the questions, by hash, is held out)")
    p.add_argument("--method", default="svf", choices=["svf", "lora"],
                   help="train SVF z-vectors (an expert) or, as the baseline, LoRA adapters on the same matrices")
    p.add_argument("--lora-rank", type=int, default=8, help="--method lora: the adapters' rank (alpha = 2 rank)")
    p.add_argument("--algo", default="reinforce", choices=["reinforce", "ppo"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per step")
    p.add_argument("--group-size", type=int, default=1, help="samples per prompt (PPO group-normalised advantages)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy rollouts (the official default)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--grad-clip", type=float, default=1e-3, help="global-norm clip (official: 1e-3)")
    p.add_argument("--kl-coef", type=float, default=0.0, help="weight of KL(ref || pi)")
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--clip-eps", type=float, default=0.2)
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-valid", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=5, help="evaluations without improvement before stopping")
    add_run_dir_args(p)


def check_train_args(p: argparse.ArgumentParser, args) -> None:
    if (args.task is None) == (args.task_file is None):
        p.error("give one of --task NAME or --task-file JSONL")
    for name in ("steps", "batch_size", "group_size", "max_new_tokens", "ppo_epochs", "n_train", "n_valid",
                 "eval_every", "patience", "lora_rank"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.algo == "ppo" and args.group_size > 1 and args.temperature == 0:
        p.error("--algo ppo with --group-size > 1 needs --temperature > 0: greedy samples of one prompt are equal "
                "and their group-normalised advantages are all zero")


def identity(args) -> dict:
    keys = ("model", "tokenizer", "pattern", "task", "task_file", "method", "lora_rank", "algo", "steps",
            "batch_size", "group_size", "temperature", "lr", "grad_clip", "kl_coef", "ppo_epochs", "clip_eps",
            "n_train", "n_valid", "max_new_tokens", "seed")
    paths = ("model", "task_file")
    return {k: (str(Path(getattr(args, k)).resolve()) if k in paths and getattr(args, k) else getattr(args, k))
            for k in keys}


def load_wrapper(args) -> tuple[SVFWrapper, object]:
    tokenizer = load_tokenizer(args.tokenizer)
    model = from_pretrained(args.model)
    if model.spec.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"--model {args.model} has vocab_size {model.spec.vocab_size}, smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}; pass the model's --tokenizer")
    return SVFWrapper(model, pattern=args.pattern, cache_dir=args.svd_cache, seed=args.seed), tokenizer


def task_data(args, tokenizer):
    """-> (name, train examples, valid examples, reward) for --task (synthetic or chat domain) or --task-file."""
    if args.task_file is not None or args.task in CHAT_DOMAINS:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"chat tasks are asked through the tokenizer's chat template; {tokenizer.name} has "
                             f"none (pass --tokenizer DIR of a chat model)")
        if args.task_file is not None:
            items = load_task_file(args.task_file)
            train_set, valid_set, _ = file_split(tokenizer, items, n_train=args.n_train, n_valid=args.n_valid,
                                                 n_test=0, seed=args.seed, source=args.task_file)
            return Path(args.task_file).stem, train_set, valid_set, strict_match
        train_set, valid_set, _ = chat_split(tokenizer, args.task, n_train=args.n_train, n_valid=args.n_valid,
                                             n_test=0, seed=args.seed)
        return args.task, train_set, valid_set, strict_match
    task = get_task(args.task)
    train_set, valid_set, _ = split(task, n_train=args.n_train, n_valid=args.n_valid, n_test=0, seed=args.seed)
    return task.name, train_set, valid_set, task.reward


def train(args) -> dict:
    """Trains one expert (or, with --method lora, LoRA adapters); returns {"best_valid", "best_step",
    "steps_done", "steps_per_s", "expert"} (the adapters' directory for LoRA)."""
    wrapper, tokenizer = load_wrapper(args)
    name, train_set, valid_set, reward = task_data(args, tokenizer)
    codec = PromptCodec.for_examples(tokenizer, train_set + valid_set, args.max_new_tokens)
    policy = LoRAPolicy(wrapper.model, rank=args.lora_rank, seed=args.seed) if args.method == "lora" else None
    trainer = SVFPPOTrainer(None if policy else wrapper, codec, algo=args.algo, lr=args.lr, grad_clip=args.grad_clip,
                            kl_coef=args.kl_coef, clip_eps=args.clip_eps, epochs=args.ppo_epochs,
                            group_size=args.group_size, temperature=args.temperature, policy=policy)
    run = RunDir(args.out, identity(args), resume=args.resume, force=args.force)
    resuming = run.resuming(args.resume)
    start, best, best_step, stale = 0, -1.0, 0, 0
    if resuming:
        start, restored, meta = run.restore({"z": trainer.z, "opt_state": trainer.opt_state, "best_z": trainer.z})
        trainer.z, trainer.opt_state, best_z = restored["z"], restored["opt_state"], restored["best_z"]
        best, best_step, stale = meta["best_valid"], meta["best_step"], meta["stale"]
        print(f"resumed {args.out} at step {start}", file=sys.stderr)
    else:
        best_z = [x.copy() for x in trainer.z]
    log = MetricsLog(run.metrics_path, resume_step=start if resuming else None)
    rng = np.random.default_rng([args.seed, 1])
    order = np.concatenate([rng.permutation(len(train_set)) for _ in range(args.steps * args.batch_size
                                                                             // len(train_set) + 1)])
    eval_batch = min(args.batch_size * args.group_size, len(valid_set))

    eval_seconds = [0.0]

    def evaluate(step):
        t = time.perf_counter()
        acc = trainer.accuracy(valid_set, reward, batch_size=eval_batch)
        log.write({"step": step, "split": "valid", "accuracy": acc})
        eval_seconds[0] += time.perf_counter() - t
        return acc

    if not resuming:
        best = evaluate(0)
        best_step = 0
    bar = progress(args.steps, start, f"{args.method} {name} {args.algo}")
    t0, done, warm = time.perf_counter(), start, None
    saved = start if resuming else None  # the step of the newest checkpoint
    eval_seconds[0] = 0.0
    try:
        for step in range(start, start if stale >= args.patience else args.steps):  # stopped early: stays so
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            try:
                rollout, metrics = trainer.step([train_set[i] for i in idx], reward, seed=args.seed * 100003 + step,
                                                task_name=name)
            except RewardError as e:  # raised before any update: trainer.z is the last good state
                if saved != done:
                    run.save(done, {"z": trainer.z, "opt_state": trainer.opt_state, "best_z": best_z},
                             {"step": done, "best_valid": best, "best_step": best_step, "stale": stale})
                raise TrainingError(f"{e}; stopped at step {step + 1} with the last good state saved in "
                                    f"{run.out / 'checkpoints'} (step {done}; --resume continues from it)") from None
            loss = metrics["loss"]
            if not np.isfinite(loss):
                raise TrainingError(f"the {args.algo} loss became {loss} at step {step + 1}; stopped (checkpoints in "
                                    f"{run.out / 'checkpoints'}). Lower --lr or check the rewards.")
            done = step + 1
            if warm is None:  # the first step compiles generate and the update: time the steady state after it
                warm = (done, time.perf_counter(), eval_seconds[0])
            record = {"step": done, "split": "train", "reward": float(rollout.rewards.mean()),
                      "accuracy": float((rollout.rewards > 0).mean()),
                      **metrics,
                      "steps_per_s": (done - start) / (time.perf_counter() - t0 - eval_seconds[0])}
            log.write(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.2f}", loss=f"{loss:.3f}")
            if done % args.eval_every == 0 or done == args.steps:
                acc = evaluate(done)
                if acc > best:
                    best, best_step, stale, best_z = acc, done, 0, [x.copy() for x in trainer.z]
                else:
                    stale += 1
                bar.write(f"step {done}: valid accuracy {acc:.3f} (best {best:.3f} at step {best_step})")
                run.save(done, {"z": trainer.z, "opt_state": trainer.opt_state, "best_z": best_z},
                         {"step": done, "best_valid": best, "best_step": best_step, "stale": stale})
                saved = done
                if stale >= args.patience:
                    bar.write(f"early stop: no validation improvement in {args.patience} evaluations")
                    break
    finally:  # Ctrl-C and errors too: the progress bar ends, metrics.png is drawn
        bar.close()
        log.close()
    steady = 0.0
    if warm is not None and done > warm[0]:  # rollouts and updates only, after the compiling first step
        steady = (done - warm[0]) / (time.perf_counter() - warm[1] - (eval_seconds[0] - warm[2]))
    if policy is not None:
        expert = policy.save(run.out / "lora", best_z)
    else:
        expert = wrapper.save(run.out / "expert.safetensors", trainer.z_vectors(best_z), name=name)
    run.close()
    print(f"best valid accuracy {best:.3f} at step {best_step}; {args.method} in {expert}", file=sys.stderr)
    return {"best_valid": best, "best_step": best_step, "steps_done": done,
            "steps_per_s": steady, "expert": str(expert)}


def main(argv=None) -> None:
    from jaxmodels_training import svf_adapt

    p = argparse.ArgumentParser(prog="python -m training.svf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one SVF expert on a task with REINFORCE or PPO")
    add_train_args(t)
    a = sub.add_parser("adapt", help="evaluate base / experts / prompt / classifier / few-shot adaptation")
    add_model_args(a)
    svf_adapt.add_args(a)
    args = p.parse_args(argv)
    compilation_cache.enable()
    try:
        if args.command == "train":
            check_train_args(t, args)
            train(args)
        else:
            svf_adapt.check_args(a, args)
            svf_adapt.run(args, load_wrapper)
    except USER_ERRORS as e:  # RewardError and ExpertMismatchError are ValueErrors
        exit_with_error(e)


if __name__ == "__main__":
    main()
