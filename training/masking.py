"""BERT-style masking for the mlm task, inside the jitted step (keys derive from the step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmodels.losses import IGNORE_INDEX


def mask_tokens(ids: jax.Array, key: jax.Array, *, mask_id: int, vocab_size: int, rate: float = 0.15,
                ) -> tuple[jax.Array, jax.Array]:
    """ids [B, T] -> (inputs [B, T], labels [B, T]).

    Each position is chosen with probability `rate`; a chosen position becomes mask_id (80%), a random
    token (10%) or stays (10%), and only chosen positions carry a label (others IGNORE_INDEX).
    """
    k_pick, k_kind, k_rand = jax.random.split(key, 3)
    chosen = jax.random.bernoulli(k_pick, rate, ids.shape)
    kind = jax.random.uniform(k_kind, ids.shape)
    random_ids = jax.random.randint(k_rand, ids.shape, 0, vocab_size, ids.dtype)
    inputs = jnp.where(chosen & (kind < 0.8), mask_id, ids)
    inputs = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    labels = jnp.where(chosen, ids, IGNORE_INDEX)
    return inputs, labels
