"""ContextBuilder: teacher windows -> Stage 1 inputs, Stage 2 tails and Stage 1 targets (originals.md 5.7).

Letters: W window length (seq_len), H teacher hidden width, N windows, E stage-1 target width, L tail tokens.
Stage 1 raw input = concat(hidden.reshape(W * H), hashed n-grams of the window's tokens [hashed_dim],
positional phases [2 W]: the teacher's RoPE phases when the capture has them (`rope_phases`), else synthetic
ones); the tail = the last L hidden states flattened [L * H] (zero-padded in front when
W < L); the Stage 1 target = hidden[-1] @ T with T ~ N(0, 1) / sqrt(H) of shape [H, E].
"""

from __future__ import annotations

import dataclasses
import json
from typing import Protocol, runtime_checkable

import numpy as np

from jaxmodels_kernels.hashing import hashed_ngram_features


def rope_phases(inv_freq, window_size: int) -> np.ndarray:
    """The teacher's RoPE phases of positions 0..W-1 (each window is run from position 0): [W, 2] = (sin, cos).

    inv_freq [F]: the teacher's rotary frequencies (radians per position, scalings applied). One frequency is
    kept: the fastest whose angle stays within half a turn over the window (theta (W - 1) <= pi), so every
    position gets a distinct phase, as with the synthetic phases (exactly half a turn); if every frequency turns
    faster, the slowest.
    """
    inv_freq = np.asarray(inv_freq, np.float64).reshape(-1)
    if inv_freq.size == 0 or not np.all(np.isfinite(inv_freq)) or np.any(inv_freq <= 0):
        raise ValueError(f"rope_phases: inv_freq must be a non-empty array of positive frequencies, got {inv_freq}")
    fits = inv_freq[inv_freq * max(window_size - 1, 1) <= np.pi]
    theta = fits.max() if fits.size else inv_freq.min()
    angle = theta * np.arange(window_size)
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


@runtime_checkable
class TeacherWindowLike(Protocol):
    """What a teacher capture must provide, for N windows of W tokens.

    tokens [N, W] int, hidden [N, W, H] float, targets [N] int (the full-vocabulary id of the token after each
    window); logits [N, V] or None; rope [N, W, 2] positional phases (sin, cos) or None (synthetic phases).
    """

    tokens: np.ndarray
    hidden: np.ndarray
    targets: np.ndarray
    logits: np.ndarray | None
    rope: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ContextBuilderConfig:
    window_size: int
    hidden_dim: int
    hashed_dim: int = 8192
    ngram: int = 2
    num_hashes: int = 2
    tail_tokens: int = 16
    stage1_target_dim: int = 1024
    seed: int = 0

    def __post_init__(self):
        for name in ("window_size", "hidden_dim", "hashed_dim", "ngram", "num_hashes", "tail_tokens",
                     "stage1_target_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ContextBuilderConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def raw_dim(self) -> int:
        """Width of the Stage 1 raw input: W * H + hashed_dim + 2 W."""
        return self.window_size * self.hidden_dim + self.hashed_dim + 2 * self.window_size

    @property
    def tail_dim(self) -> int:
        return self.tail_tokens * self.hidden_dim

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ContextBuilderConfig":
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True, eq=False)
class ContextBatch:
    """context [N, raw_dim], tail [N, L * H], stage1_target [N, E] (float32)."""

    context: np.ndarray
    tail: np.ndarray
    stage1_target: np.ndarray

    def __getitem__(self, rows) -> "ContextBatch":
        """The same rows (a slice or index array) of all three arrays."""
        return ContextBatch(self.context[rows], self.tail[rows], self.stage1_target[rows])


class ContextBuilder:
    """Builds the HTFT inputs from teacher windows; the target projection is drawn from `config.seed`."""

    def __init__(self, config: ContextBuilderConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.target_projection = (rng.standard_normal((config.hidden_dim, config.stage1_target_dim))
                                  / np.sqrt(config.hidden_dim)).astype(np.float32)  # [H, E]
        w = config.window_size
        phase = np.pi * np.arange(w) / max(w - 1, 1)
        self.synthetic_phases = np.stack([np.sin(phase), np.cos(phase)], axis=1).astype(np.float32)  # [W, 2]

    def _check(self, tokens: np.ndarray, hidden: np.ndarray, rope) -> None:
        c = self.config
        if hidden.ndim != 3 or hidden.shape[1:] != (c.window_size, c.hidden_dim):
            raise ValueError(f"ContextBuilder: hidden states of shape {hidden.shape}, expected [N, W, H] = "
                             f"[N, {c.window_size}, {c.hidden_dim}]")
        if tokens.shape != hidden.shape[:2]:
            raise ValueError(f"ContextBuilder: tokens of shape {tokens.shape}, expected [N, W] = {hidden.shape[:2]}")
        if rope is not None and np.shape(rope) != (*hidden.shape[:2], 2):
            raise ValueError(f"ContextBuilder: rope phases of shape {np.shape(rope)}, expected [N, W, 2] = "
                             f"{(*hidden.shape[:2], 2)}")

    def build(self, tokens, hidden, rope=None) -> ContextBatch:
        """tokens [N, W], hidden [N, W, H], rope [N, W, 2] or None -> ContextBatch."""
        c = self.config
        tokens, hidden = np.asarray(tokens), np.asarray(hidden, np.float32)
        self._check(tokens, hidden, rope)
        n, w, h = hidden.shape
        hashed = np.stack([hashed_ngram_features(t, c.hashed_dim, c.ngram, c.num_hashes) for t in tokens]) \
            if n else np.zeros((0, c.hashed_dim), np.float32)
        phases = np.broadcast_to(self.synthetic_phases, (n, w, 2)) if rope is None else np.asarray(rope, np.float32)
        context = np.concatenate([hidden.reshape(n, w * h), hashed, phases.reshape(n, 2 * w)], axis=1)
        take = min(c.tail_tokens, w)
        tail = np.zeros((n, c.tail_tokens, h), np.float32)
        tail[:, c.tail_tokens - take:] = hidden[:, w - take:]
        target = hidden[:, -1] @ self.target_projection  # [N, E]
        return ContextBatch(context=context.astype(np.float32), tail=tail.reshape(n, c.tail_dim),
                            stage1_target=target.astype(np.float32))

    def build_windows(self, windows: TeacherWindowLike) -> ContextBatch:
        return self.build(windows.tokens, windows.hidden, getattr(windows, "rope", None))
