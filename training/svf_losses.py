"""Policy-gradient losses over z: REINFORCE with KL(ref || pi) (the official Transformer² objective) and PPO.

Letters: B sequences, S positions of prompt + response, V vocabulary. Position t of the shifted arrays
([B, S-1]) scores token t+1 given tokens <= t; `mask` [B, S-1] marks the response tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits [B, S, V], tokens [B, S] -> (log-softmax [B, S-1, V], log-prob of the next token [B, S-1])."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return logp, chosen


def kl_ref_pi(ref_logp: jax.Array, logp: jax.Array) -> jax.Array:
    """KL(ref || pi) per position [B, S-1] = sum_v p_ref (log p_ref - log pi), as torch's
    F.kl_div(log pi, log p_ref, log_target=True) before its reduction."""
    return jnp.sum(jnp.exp(ref_logp) * (ref_logp - logp), axis=-1)


def reinforce_loss(chosen: jax.Array, mask: jax.Array, rewards: jax.Array, kl: jax.Array | None = None,
                   kl_coef: float = 0.0) -> tuple[jax.Array, dict]:
    """mean_j(-r_j * sum_t log pi(y_jt)) + kl_coef * mean_j sum_t KL_jt (the official per-sample sums / B)."""
    mask = mask.astype(jnp.float32)
    seq_logp = jnp.sum(chosen * mask, axis=1)  # [B]
    pg = jnp.mean(-seq_logp * rewards)
    kl_seq = jnp.zeros_like(seq_logp) if kl is None else jnp.sum(kl * mask, axis=1)
    return pg + kl_coef * jnp.mean(kl_seq), {"pg_loss": pg, "kl": jnp.mean(kl_seq)}


def group_advantages(rewards: jax.Array, group_size: int) -> jax.Array:
    """(r - mean_group) / max(std_group, 1e-7) over consecutive groups of group_size samples of one prompt;
    group_size 1 normalises over the whole batch. rewards [B] -> [B]."""
    groups = rewards.reshape(-1, group_size) if group_size > 1 else rewards.reshape(1, -1)
    mean = groups.mean(axis=1, keepdims=True)
    std = groups.std(axis=1, keepdims=True)
    return ((groups - mean) / jnp.maximum(std, 1e-7)).reshape(-1)


def ppo_loss(chosen: jax.Array, old_chosen: jax.Array, mask: jax.Array, advantages: jax.Array,
             kl: jax.Array | None = None, *, clip_eps: float = 0.2, kl_coef: float = 0.0) -> tuple[jax.Array, dict]:
    """Clipped surrogate -min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = pi / pi_old per token, averaged
    over each sequence's response tokens then over the batch; plus kl_coef * the same average of KL(ref || pi)."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(axis=1), 1.0)  # [B]
    ratio = jnp.exp(chosen - old_chosen)  # [B, S-1]
    adv = advantages[:, None]
    surrogate = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    pg = jnp.mean(jnp.sum(surrogate * mask, axis=1) / count)
    kl_seq = jnp.zeros_like(count) if kl is None else jnp.sum(kl * mask, axis=1) / count
    clipped = jnp.sum((jnp.abs(ratio - 1.0) > clip_eps) * mask) / jnp.maximum(mask.sum(), 1.0)
    return pg + kl_coef * jnp.mean(kl_seq), {"pg_loss": pg, "kl": jnp.mean(kl_seq), "clip_fraction": clipped}
