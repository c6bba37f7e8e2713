"""Distil a frozen teacher LM into the two-stage HTFT: `python -m training.htft --help`.

--model: a Hugging Face causal LM directory (run in JAX by our Flax decoder when it is a family we implement, e.g.
SmolLM2 or Gemma 3; through transformers otherwise), or one of ours (a jaxmodels checkpoint directory, or a
`training.hyformer` run directory). Pipeline: teacher capture (cached on disk, with the teacher's RoPE phases when
it has rotary positions) -> compact vocabulary from the training stream -> ContextBuilder -> one sequential online
pass of both stages (or --epochs passes) -> evaluation on held-out windows -> JSONL metrics and a self-contained
`.npz` checkpoint (--output). With --data the token stream of the local text files is split into the first
--train-tokens for training and the next --eval-tokens for evaluation; with --dataset the
dataset's train and validation splits are used (a hub name, or a local directory of data files offline).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from jaxmodels_interop.teacher import TeacherError, capture, token_stream
from jaxmodels_interop.teacher_load import BACKENDS, load_teacher
from jaxmodels import compilation_cache
from jaxmodels.htfr import HTFRConfig
from jaxmodels.htft.checkpoint import HTFTCheckpointError
from jaxmodels.htft import (ContextBuilder, ContextBuilderConfig, HTFTCheckpoint, HTFTTrainer,
                            HypertensorFieldTransformer, StageSpec, build_vocab_mapping, load_htft_checkpoint,
                            save_htft_checkpoint, teacher_truncated_nll)
from jaxmodels.paths import OverlapError, check_destination, expand
from jaxmodels_training.cli_args import exit_with_error
from jaxmodels_training.data import load_documents
from jaxmodels_training.metrics import MetricsLog, progress
from jaxmodels_training.rundir import identity_changes

# Settings that define a run: resuming with any of them changed is refused.
IDENTITY = ("model", "tokenizer", "dataset", "dataset_config", "data", "train_tokens", "eval_tokens", "seq_len",
            "stride", "eval_stride", "stage1_tensors", "stage2_tensors", "stage1_countsketch_dim",
            "stage2_countsketch_dim", "stage1_srht_dim", "stage2_srht_dim", "stage1_target_dim", "tail_tokens",
            "hashed_dim", "vocab_limit", "top_k", "train_top_k", "stage1_tau", "stage2_tau", "stage1_eta",
            "stage2_eta", "stage1_eta_g", "stage2_eta_g", "max_train_examples", "max_eval_examples", "epochs",
            "seed")


class HTFTRunError(ValueError):
    """The run cannot start as asked (bad corpus size, output already holding a run, mismatched resume)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.htft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("teacher and data")
    d.add_argument("--model", required=True, help="a Hugging Face causal LM directory or hub id (e.g. google/gemma-3-270m; "
                                                  "the local cache first, then the hub), "
                                                  "or ours: a jaxmodels checkpoint or training run directory")
    d.add_argument("--tokenizer", metavar="DIR|bytes", help="the teacher's tokenizer when its directory has none: a "
                                                           "directory with tokenizer.json, or 'bytes' (byte-level); "
                                                           "default: the model directory's own, or the one its "
                                                           "training run recorded")
    d.add_argument("--teacher-backend", choices=BACKENDS, default="auto",
                   help="auto (default): our Flax decoder in JAX for our checkpoints and for Hugging Face directories "
                        "of a family we implement (llama, gemma3_text, qwen2, ...), transformers (PyTorch) for any "
                        "other; jax or torch to insist on one")
    d.add_argument("--hf-token", default=None,
                   help="Hugging Face token for a hub --model that needs one (gated models); default: HF_TOKEN or the saved login")
    d.add_argument("--data", nargs="+", metavar="PATH", help="local text files or globs")
    d.add_argument("--dataset", help="a Hugging Face dataset with train and validation splits: a hub name (needs "
                                     "network) or a local directory of data files (e.g. train.jsonl, validation.jsonl "
                                     "with a text column; works offline, HF_DATASETS_OFFLINE=1)")
    d.add_argument("--dataset-config", help="the dataset's configuration name")
    d.add_argument("--train-tokens", type=int, default=200_000)
    d.add_argument("--eval-tokens", type=int, default=50_000)
    d.add_argument("--seq-len", type=int, default=128)
    d.add_argument("--stride", type=int, default=64)
    d.add_argument("--eval-stride", type=int, default=None, help="stride of the held-out windows (default: --stride), "
                                                                 "e.g. larger to spread --max-eval-examples over all "
                                                                 "of the held-out text")
    d.add_argument("--max-train-examples", type=int, default=2048)
    d.add_argument("--max-eval-examples", type=int, default=512)
    d.add_argument("--batch-size", type=int, default=8, help="teacher windows per forward pass")
    d.add_argument("--cache-dir", help="teacher capture cache (default: OUTPUT's directory/teacher_cache)")
    m = p.add_argument_group("student")
    for stage, tensors, cs, srht, tau, eta, eta_g in ((1, 8000, 32768, 16384, 1.0, 0.04, 0.004),
                                                      (2, 16000, 8192, 4096, 0.8, 0.03, 0.003)):
        m.add_argument(f"--stage{stage}-tensors", type=int, default=tensors)
        m.add_argument(f"--stage{stage}-countsketch-dim", type=int, default=cs, help="0 skips the CountSketch")
        m.add_argument(f"--stage{stage}-srht-dim", type=int, default=srht)
        m.add_argument(f"--stage{stage}-tau", type=float, default=tau)
        m.add_argument(f"--stage{stage}-eta", type=float, default=eta)
        m.add_argument(f"--stage{stage}-eta-g", type=float, default=eta_g)
    m.add_argument("--stage1-target-dim", type=int, default=1024)
    m.add_argument("--tail-tokens", type=int, default=16)
    m.add_argument("--hashed-dim", type=int, default=8192)
    m.add_argument("--vocab-limit", type=int, default=4096)
    m.add_argument("--top-k", type=int, default=64)
    m.add_argument("--train-top-k", type=int, default=1024)
    m.add_argument("--seed", type=int, default=17)
    r = p.add_argument_group("run")
    r.add_argument("--output", required=True, help="the checkpoint (.npz), rewritten atomically at each evaluation")
    r.add_argument("--metrics-path", help="JSONL metrics, one line per evaluation (default: OUTPUT with .jsonl)")
    r.add_argument("--eval-every", type=int, default=0, help="evaluate every this many training windows "
                                                             "(default: once, after each pass)")
    r.add_argument("--epochs", type=int, default=None, help="passes over the training windows, in the same order "
                                                            "(default 1, the original's single online pass)")
    r.add_argument("--chunk", type=int, default=64, help="windows per jitted field call (speed only)")
    r.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    r.add_argument("--force", action="store_true", help="replace an existing --output and metrics file")
    return p


def identity(args) -> dict:
    ident = {k: getattr(args, k) for k in IDENTITY}
    ident["model"] = str(Path(args.model).resolve())
    return ident


def _documents(flag: str, **kw) -> list[str]:
    """load_documents with its failures (missing files, unknown dataset or split, no network) as HTFTRunError."""
    try:
        return load_documents(**kw)
    except (OSError, ValueError, ConnectionError) as err:
        raise HTFTRunError(f"{flag}: {err}") from err


def _streams(args, teacher) -> tuple[np.ndarray, np.ndarray]:
    if args.dataset is not None and args.data:
        raise HTFTRunError("give the corpus once: --data FILE... (local text) or --dataset NAME, not both")
    if args.dataset is not None:
        flag = f"--dataset {args.dataset}"
        kw = dict(dataset=args.dataset, dataset_config=args.dataset_config)
        train = token_stream(teacher, _documents(flag, **kw))
        held = token_stream(teacher, _documents(flag, split="validation", **kw))
        if train.size < args.train_tokens or held.size < args.eval_tokens:
            raise HTFTRunError(f"--dataset {args.dataset}: {train.size} train / {held.size} validation tokens, fewer "
                               f"than --train-tokens {args.train_tokens} / --eval-tokens {args.eval_tokens}")
        return train[:args.train_tokens], held[:args.eval_tokens]
    if not args.data:
        raise HTFTRunError("give the corpus: --data FILE... (local text) or --dataset NAME")
    stream = token_stream(teacher, _documents("--data", data=args.data))
    need = args.train_tokens + args.eval_tokens
    if stream.size < need:
        raise HTFTRunError(f"corpus too small: --data holds {stream.size} tokens, fewer than --train-tokens "
                           f"{args.train_tokens} + --eval-tokens {args.eval_tokens} = {need}")
    return stream[:args.train_tokens], stream[args.train_tokens:need]


def _check_output(args, metrics_path: Path) -> HTFTCheckpoint | None:
    out = Path(args.output)
    if args.resume and args.force:
        raise HTFTRunError("--force and --resume contradict each other: --force starts over, --resume continues")
    sources = [args.model, args.tokenizer, *expand(args.data or [])]
    try:
        check_destination(out, sources, what="--output")
        check_destination(metrics_path, sources, what="--metrics-path")
    except OverlapError as err:
        raise HTFTRunError(str(err)) from None
    if out.is_dir():
        raise HTFTRunError(f"--output {out} is a directory; expected the checkpoint file to write (e.g. {out / 'htft.npz'})")
    if args.resume:
        if not out.is_file():
            raise HTFTRunError(f"--resume: {out} holds no checkpoint to resume")
        try:
            ckpt = load_htft_checkpoint(out)
        except (HTFTCheckpointError, KeyError) as err:  # the loader's: damaged, or not an HTFT checkpoint
            raise HTFTRunError(f"--resume: {err}") from None
        details = identity_changes(ckpt.metadata.get("identity", {}), identity(args), was="checkpoint has")
        if details:
            raise HTFTRunError(f"--resume: {out} was trained with another configuration ({details})")
        return ckpt
    for path in (out, metrics_path):
        if path.exists() and not args.force:
            raise HTFTRunError(f"{path} already exists; pass --resume to continue that run, --force to replace it, "
                               f"or choose another --output / --metrics-path")
    return None


def _specs(args) -> tuple[StageSpec, StageSpec]:
    def spec(i):
        g = lambda name: getattr(args, f"stage{i}_{name}")  # noqa: E731
        cfg = HTFRConfig(top_k=args.top_k, train_top_k=args.train_top_k, eta=g("eta"), eta_g=g("eta_g"),
                         chunk_size=args.chunk)
        return StageSpec(g("tensors"), g("countsketch_dim"), g("srht_dim"), cfg, tau=g("tau"))
    return spec(1), spec(2)


def run(args) -> dict:
    """Runs the whole pipeline; returns the last metrics record."""
    if args.epochs is not None and args.epochs < 1:
        raise HTFTRunError(f"--epochs must be >= 1, got {args.epochs}")
    metrics_path = Path(args.metrics_path or Path(args.output).with_suffix(".jsonl"))
    resumed = _check_output(args, metrics_path)
    teacher = load_teacher(args.model, args.tokenizer, hf_token=args.hf_token, backend=args.teacher_backend)
    train_stream, eval_stream = _streams(args, teacher)
    cache = Path(args.cache_dir) if args.cache_dir else Path(args.output).parent / "teacher_cache"
    t0 = time.perf_counter()
    train_w, hit_train = capture(teacher, train_stream, seq_len=args.seq_len, stride=args.stride,
                                 max_windows=args.max_train_examples, batch_size=args.batch_size, cache_dir=cache)
    eval_w, hit_eval = capture(teacher, eval_stream, seq_len=args.seq_len, stride=args.eval_stride or args.stride,
                               max_windows=args.max_eval_examples, with_logits=True, batch_size=args.batch_size,
                               cache_dir=cache)
    phases = "teacher RoPE" if train_w.rope is not None else "synthetic"
    print(f"teacher: {len(train_w)} train / {len(eval_w)} eval windows in {time.perf_counter() - t0:.1f}s "
          f"(cache {'hit' if hit_train and hit_eval else 'miss'}; {teacher.backend}; {phases} phases)",
          file=sys.stderr)

    vocab = build_vocab_mapping(train_stream, args.vocab_limit, teacher.vocab_size)
    cfg = ContextBuilderConfig(window_size=args.seq_len, hidden_dim=teacher.hidden_size, hashed_dim=args.hashed_dim,
                               tail_tokens=args.tail_tokens, stage1_target_dim=args.stage1_target_dim, seed=0)
    builder = ContextBuilder(cfg)
    train_b, eval_b = builder.build_windows(train_w), builder.build_windows(eval_w)
    train_y, eval_y = vocab(train_w.targets), vocab(eval_w.targets)
    teacher_nll = float(np.mean(teacher_truncated_nll(eval_w.logits, vocab.shortlist, eval_y)))
    counts = np.bincount(vocab(train_stream), minlength=vocab.num_classes) + 1.0
    unigram_nll = float(np.mean(-np.log(counts[eval_y] / counts.sum())))

    if resumed is not None:
        model, step = resumed.model, int(resumed.metadata["step"])
    else:
        s1, s2 = _specs(args)
        model = HypertensorFieldTransformer.create(cfg.raw_dim, cfg.tail_dim, args.stage1_target_dim,
                                                   vocab.num_classes, s1, s2, seed=args.seed)
        step = 0
    trainer = HTFTTrainer(model, chunk=args.chunk)
    log = MetricsLog(metrics_path, resume_step=step if resumed is not None else None)
    n = len(train_w)
    total = n * (args.epochs or 1)
    every = args.eval_every or n
    bar = progress(total, step, "htft")
    record: dict = {}
    try:
        while step < total:
            hi = min(total, (step // every + 1) * every)
            lo = step % n  # windows seen step..hi: the passes one after another
            rows = slice(lo, lo + hi - step) if lo + hi - step <= n else np.arange(step, hi) % n
            tr = trainer.train(train_b[rows], train_y[rows], on_chunk=bar.update)
            ev = trainer.evaluate(eval_b, eval_y)
            step = hi
            record = {"step": step, "train_loss": tr["loss"], "train_ppl": tr["ppl"], "eval_loss": ev["loss"],
                      "eval_ppl": ev["ppl"], "teacher_ppl": math.exp(teacher_nll), "unigram_ppl": math.exp(unigram_nll),
                      "stage1_loss": tr["stage1_loss"], "eval_stage1_loss": ev["stage1_loss"],
                      "samples_per_s": tr["samples_per_s"], "eval_samples_per_s": ev["samples_per_s"]}
            log.write(record)
            save_htft_checkpoint(args.output, HTFTCheckpoint(model, vocab, cfg, {
                "identity": identity(args), "step": step, "teacher": teacher.name, "teacher_backend": teacher.backend,
                "phases": phases, "diagnostics": model.diagnostics()}))
            bar.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
    finally:
        bar.close()
        log.close()
    return record


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    compilation_cache.enable()
    try:
        run(args)
    except (HTFTRunError, TeacherError) as err:
        exit_with_error(err)


if __name__ == "__main__":
    main()
