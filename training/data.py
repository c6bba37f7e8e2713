"""Text corpora through `datasets`, tokenized into one token stream, cut into deterministic batches.

A batch is a function of (seed, step) alone, so the data position of a run is its step and resuming
replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np


def default_corpus_files() -> list[str]:
    """The Python standard library's own source files (tests and IDLE left out): ~11 MB wherever Python runs."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    skip = ("site-packages", f"{os.sep}test", "idlelib", "lib2to3")
    return [f for f in files if not any(s in f[len(root):] for s in skip)]


def _check_files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        matches = sorted(glob.glob(p, recursive=True)) if any(c in p for c in "*?[") else [p]
        if not matches:
            raise FileNotFoundError(f"--data {p}: no file matches")
        for m in matches:
            if Path(m).is_dir():
                raise IsADirectoryError(f"--data {m}: is a directory; pass files or a glob such as '{m}/**/*.txt'")
            if not Path(m).is_file():
                raise FileNotFoundError(f"--data {m}: no such file")
            if os.path.getsize(m) == 0:
                raise ValueError(f"--data {m}: the file is empty")
            out.append(m)
    return out


class CorpusError(ValueError):
    """Local corpus files that cannot be read as text."""


def _not_text(files: list[str], err: Exception) -> CorpusError:
    """The error for a corpus `datasets` could not read: the first file that is not UTF-8 text, named."""
    for name in files:
        try:
            Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            return CorpusError(f"--data {name}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                               f"pass text files")
    return CorpusError(f"--data: the files cannot be read as text ({err.__cause__ or err})")


def load_documents(data: list[str] | None = None, dataset: str | None = None, dataset_config: str | None = None,
                   split: str = "train", text_field: str = "text") -> list[str]:
    """Documents from local text files (one document per file) or a hub dataset; default: the stdlib corpus."""
    if dataset is None:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
    if dataset is not None:
        ds = datasets.load_dataset(dataset, dataset_config, split=split)
        if text_field not in ds.column_names:
            raise ValueError(f"dataset {dataset!r} has no column {text_field!r}; columns: {ds.column_names}")
        docs = ds[text_field]
    else:
        files = _check_files(data) if data else default_corpus_files()
        try:
            ds = datasets.load_dataset("text", data_files={"train": files}, sample_by="document", split="train")
        except datasets.exceptions.DatasetGenerationError as e:
            raise _not_text(files, e) from None
        docs = ds["text"]
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"the corpus ({dataset or ', '.join(data or ['stdlib'])}) holds no text")
    return docs


class TokenStream:
    """Documents encoded and joined with EOS: `train` and `eval` token arrays [N] int32.

    Every `eval_every_doc`-th document goes to the evaluation split (a single-document corpus is
    split 95/5 by tokens instead).
    """

    def __init__(self, docs: list[str], tokenizer, *, eval_every_doc: int = 20):
        eos = np.array([tokenizer.eos_id if tokenizer.eos_id is not None else 0], np.int32)
        encoded = [np.concatenate([tokenizer.encode(d), eos]) for d in docs]
        if len(encoded) >= 2 * eval_every_doc:
            train = [e for i, e in enumerate(encoded) if i % eval_every_doc != eval_every_doc - 1]
            held = [e for i, e in enumerate(encoded) if i % eval_every_doc == eval_every_doc - 1]
            self.train, self.eval = np.concatenate(train), np.concatenate(held)
        else:
            allt = np.concatenate(encoded)
            cut = int(len(allt) * 0.95)
            self.train, self.eval = allt[:cut], allt[cut:]
        self.vocab_size = tokenizer.vocab_size


class Batches:
    """Windows of seq_len tokens from a stream; batch(step) -> ids [B, seq_len] int32, deterministic.

    Epoch e visits every window once in the order of a permutation drawn from (seed, e).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, *, shuffle: bool = True,
                 name: str = "train"):
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < batch_size:
            raise ValueError(f"the {name} split has {len(tokens)} tokens: {self.n_windows} windows of seq_len "
                             f"{seq_len}, fewer than one batch of {batch_size}; use more data or smaller sizes")
        self.tokens, self.batch_size, self.seq_len, self.seed, self.shuffle = tokens, batch_size, seq_len, seed, shuffle
        self.per_epoch = self.n_windows // batch_size
        self._order_epoch, self._order = -1, None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(self.n_windows) if self.shuffle
                           else np.arange(self.n_windows))
            self._order_epoch = epoch
        return self._order

    def batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        windows = self._epoch_order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        idx = windows[:, None] * self.seq_len + np.arange(self.seq_len)[None, :]
        return self.tokens[idx]
