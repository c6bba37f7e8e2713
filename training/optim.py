"""AdamW with linear warm-up + cosine decay and global-norm clipping."""

from __future__ import annotations

import jax
import optax


def make_schedule(lr: float, steps: int, warmup_steps: int, min_lr_ratio: float = 0.1) -> optax.Schedule:
    warmup_steps = min(warmup_steps, max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(steps, warmup_steps + 1),
                                              end_value=lr * min_lr_ratio)


def make_optimizer(schedule: optax.Schedule, *, weight_decay: float = 0.1, grad_clip: float | None = 1.0,
                   b1: float = 0.9, b2: float = 0.95) -> optax.GradientTransformation:
    """Decays matrices only (not norms or biases)."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask))
    return optax.chain(*parts)
