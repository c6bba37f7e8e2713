"""The compact vocabulary: the `vocab_limit` most frequent training tokens, everything else -> `unk_index`."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class VocabMapping:
    """mapping [V] int64: full token id -> compact id in [0, unk_index]; shortlist [S]: compact id -> full id.

    unk_index = S, so the student predicts S + 1 classes (the last one is "any other token").
    """

    mapping: np.ndarray
    shortlist: np.ndarray
    unk_index: int

    @property
    def num_classes(self) -> int:
        return self.unk_index + 1

    def __call__(self, tokens) -> np.ndarray:
        """Full token ids (any shape) -> compact ids of the same shape."""
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.mapping.shape[0]):
            raise ValueError(f"VocabMapping: token ids must lie in [0, {self.mapping.shape[0]}), got "
                             f"{int(tokens.min())}..{int(tokens.max())}")
        return self.mapping[tokens]

    def to_full(self, compact) -> np.ndarray:
        """Compact ids -> full token ids; unk_index maps to -1 (no single token)."""
        compact = np.asarray(compact)
        table = np.concatenate([self.shortlist, np.array([-1], self.shortlist.dtype)])
        return table[compact]


def build_vocab_mapping(tokens, vocab_limit: int, vocab_size: int | None = None) -> VocabMapping:
    """Counts the training stream tokens [T] and keeps the `vocab_limit` most frequent ids.

    Ties are broken by the smaller token id (a stable sort; the original's unstable quicksort left the tie order
    to the implementation). Ids never seen are never in the shortlist, so S <= min(vocab_limit, distinct ids).
    """
    tokens = np.asarray(tokens).reshape(-1)
    if vocab_limit < 1:
        raise ValueError(f"build_vocab_mapping: vocab_limit must be >= 1, got {vocab_limit}")
    if tokens.size == 0:
        raise ValueError("build_vocab_mapping: the training token stream is empty")
    if tokens.min() < 0:
        raise ValueError("build_vocab_mapping: token ids must be non-negative")
    size = int(tokens.max()) + 1 if vocab_size is None else int(vocab_size)
    if tokens.max() >= size:
        raise ValueError(f"build_vocab_mapping: token id {int(tokens.max())} is >= vocab_size {size}")
    counts = np.bincount(tokens.astype(np.int64), minlength=size)
    order = np.argsort(-counts, kind="stable")
    shortlist = order[:vocab_limit]
    shortlist = shortlist[counts[shortlist] > 0].astype(np.int64)
    unk = int(shortlist.shape[0])
    mapping = np.full(size, unk, np.int64)
    mapping[shortlist] = np.arange(unk)
    return VocabMapping(mapping=mapping, shortlist=shortlist, unk_index=unk)
