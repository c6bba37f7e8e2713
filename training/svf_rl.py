"""SVF policy machinery: prompts -> rollouts with our jitted `generate` -> rewards -> jitted z updates.

Letters: B rollouts (prompts x group size), P padded prompt length, G new tokens, S = P + G, V vocabulary.
Prompts are left-padded to one fixed P per run, so generation and the update compile once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmodels.generate import generate
from jaxmodels.svf import SVFWrapper
from jaxmodels.svf.patch import masks_from_z, patch_state
from jaxmodels_training.svf_losses import group_advantages, kl_ref_pi, ppo_loss, reinforce_loss, token_logprobs
from jaxmodels_training.svf_tasks import Example


class RewardError(ValueError):
    """A reward function returned something that is not a finite number."""


@dataclasses.dataclass
class Rollout:
    tokens: np.ndarray  # [B, S] prompt + generated
    attention_mask: np.ndarray  # [B, S] 0 on left padding
    response_mask: np.ndarray  # [B, S] 1 on generated tokens up to and including the stop token
    completions: list[str]
    rewards: np.ndarray  # [B]


class PromptCodec:
    """Left-pads encoded prompts to a fixed length; finds each completion's end (the stop token)."""

    def __init__(self, tokenizer, prompt_len: int, max_new_tokens: int):
        self.tokenizer, self.prompt_len, self.max_new_tokens = tokenizer, prompt_len, max_new_tokens
        newline = tokenizer.encode("\n")
        self.stop_id = int(newline[0]) if len(newline) == 1 else tokenizer.eos_id
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    @classmethod
    def for_examples(cls, tokenizer, examples: Sequence[Example], max_new_tokens: int) -> PromptCodec:
        return cls(tokenizer, max(len(tokenizer.encode(e.prompt)) for e in examples), max_new_tokens)

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> ids [B, P], mask [B, P] (left padding)."""
        ids = np.full((len(prompts), self.prompt_len), self.pad_id, np.int32)
        mask = np.zeros_like(ids)
        for i, p in enumerate(prompts):
            enc = self.tokenizer.encode(p)[-self.prompt_len:]
            ids[i, self.prompt_len - len(enc):] = enc
            mask[i, self.prompt_len - len(enc):] = 1
        return ids, mask

    def responses(self, tokens: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """tokens [B, S] -> (response mask [B, S], decoded completions up to the stop token)."""
        gen = tokens[:, self.prompt_len:]
        mask = np.zeros_like(tokens)
        texts = []
        eos = -1 if self.tokenizer.eos_id is None else self.tokenizer.eos_id  # eos_id 0 is a real id
        for i, row in enumerate(gen):
            stops = np.flatnonzero((row == self.stop_id) | (row == eos))
            end = int(stops[0]) + 1 if len(stops) else len(row)
            mask[i, self.prompt_len:self.prompt_len + end] = 1
            texts.append(self.tokenizer.decode(row[:end - 1 if len(stops) else end]))
        return mask, texts


def check_rewards(rewards: Sequence[float], task_name: str) -> np.ndarray:
    r = np.asarray(rewards, np.float64)
    bad = np.flatnonzero(~np.isfinite(r))
    if len(bad):
        raise RewardError(f"the reward function of task {task_name!r} returned {r[bad[0]]} for {len(bad)} of "
                          f"{len(r)} samples (indices {bad[:8].tolist()}); rewards must be finite numbers")
    return r.astype(np.float32)


def rollout_with(model, examples: Sequence[Example], codec: PromptCodec, reward_fn, *, group_size: int = 1,
                 temperature: float = 0.0, seed: int = 0, task_name: str = "task") -> Rollout:
    """Generates group_size completions per example with `model` and scores them."""
    prompts = [e.prompt for e in examples for _ in range(group_size)]
    ids, mask = codec.encode(prompts)
    tokens = np.asarray(generate(model, ids, codec.max_new_tokens, temperature=temperature, seed=seed,
                                 eos_token_id=codec.stop_id, attention_mask=mask, pad_token_id=codec.pad_id))
    response_mask, texts = codec.responses(tokens)
    answers = [e.answer for e in examples for _ in range(group_size)]
    rewards = check_rewards([reward_fn(t, a) for t, a in zip(texts, answers)], task_name)
    attention = np.concatenate([mask, np.ones((len(prompts), codec.max_new_tokens), np.int32)], axis=1)
    return Rollout(tokens, attention, response_mask, texts, rewards)


def fixed_batches(examples: Sequence, batch_size: int):
    """Yields (chunk, n): batches of batch_size, the last one padded by repeating its last item (one compiled
    shape for generate); only the first n items of a chunk are real."""
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        yield chunk + [chunk[-1]] * (batch_size - len(chunk)), len(chunk)


def accuracy_with(model, examples: Sequence[Example], codec: PromptCodec, reward_fn, *, batch_size: int) -> float:
    """Fraction of examples answered with a positive reward, greedy, in fixed-size batches."""
    if not examples:
        raise ValueError("no examples to evaluate")
    hits = 0.0
    for chunk, n in fixed_batches(examples, batch_size):
        hits += float(np.sum(rollout_with(model, chunk, codec, reward_fn).rewards[:n] > 0))
    return hits / len(examples)


class SVFPolicy:
    """z as a list ordered like wrapper.keys (orbax- and optax-friendly); jitted log-probs and updates."""

    def __init__(self, wrapper: SVFWrapper):
        self.wrapper = wrapper
        self.frozen = (wrapper.params, wrapper.components)
        keys = tuple(wrapper.keys)
        kshapes = wrapper.kernel_shapes

        def model_for(z, frozen):
            params, comps = frozen
            if z is None:
                return wrapper.merge(params)
            return wrapper.merge(patch_state(params, comps, masks_from_z(dict(zip(keys, z))), kshapes))

        def logprobs(z, frozen, tokens, attention_mask):
            logits = model_for(z, frozen)(tokens, attention_mask=attention_mask).logits  # [B, S, V]
            return token_logprobs(logits, tokens)

        self.keys = keys
        self.model_for = model_for
        self.logprobs = logprobs
        self._logprobs = jax.jit(logprobs)
        self._ref_logprobs = jax.jit(lambda frozen, tokens, mask: logprobs(None, frozen, tokens, mask)[0])
        # PPO's old log-probs need the chosen tokens' [B, S-1] only, not the whole [B, S-1, V] log-softmax
        self._chosen_logprobs = jax.jit(lambda z, frozen, tokens, mask: logprobs(z, frozen, tokens, mask)[1])

    def z_list(self, z: dict | None = None) -> list[jax.Array]:
        z = self.wrapper.z_vectors if z is None else z
        return [jnp.array(z[k], copy=True) for k in self.keys]  # copies: updates donate their z

    def z_dict(self, z: list[jax.Array]) -> dict[str, jax.Array]:
        return dict(zip(self.keys, z))

    def patched(self, z: list[jax.Array] | None):
        return self.wrapper.merge(self.wrapper.params) if z is None else self.wrapper.patch_weights(self.z_dict(z))

    def rollout(self, z, examples: Sequence[Example], codec: PromptCodec, reward_fn, *, group_size: int = 1,
                temperature: float = 0.0, seed: int = 0, task_name: str = "task") -> Rollout:
        """Generates group_size completions per example with W'(z) and scores them."""
        return rollout_with(self.patched(z), examples, codec, reward_fn, group_size=group_size,
                            temperature=temperature, seed=seed, task_name=task_name)

    def make_update(self, tx: optax.GradientTransformation, *, algo: str, kl_coef: float, clip_eps: float):
        """-> update(z, opt_state, batch) -> (z, opt_state, metrics), jitted, z and opt_state donated.

        batch: tokens, attention_mask, response_mask [B, S]; rewards or advantages [B]; old_logp [B, S-1]
        (PPO); ref_logp [B, S-1, V] when kl_coef > 0.
        """
        if algo not in ("reinforce", "ppo"):
            raise ValueError(f"unknown RL algorithm {algo!r}; choose 'reinforce' or 'ppo'")
        frozen = self.frozen

        def objective(z, frozen, batch):
            logp, chosen = self.logprobs(z, frozen, batch["tokens"], batch["attention_mask"])
            mask = batch["response_mask"][:, 1:]
            kl = kl_ref_pi(batch["ref_logp"], logp) if "ref_logp" in batch else None
            if algo == "reinforce":
                return reinforce_loss(chosen, mask, batch["rewards"], kl, kl_coef)
            return ppo_loss(chosen, batch["old_logp"], mask, batch["advantages"], kl, clip_eps=clip_eps,
                            kl_coef=kl_coef)

        @partial(jax.jit, donate_argnums=(0, 1))
        def update(z, opt_state, frozen, batch):
            (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(z, frozen, batch)
            updates, opt_state = tx.update(grads, opt_state, z)
            return optax.apply_updates(z, updates), opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                                                                **aux}

        return lambda z, opt_state, batch: update(z, opt_state, frozen, batch)

    def batch_from(self, z, rollout: Rollout, *, algo: str, kl_coef: float, group_size: int) -> dict:
        batch = {"tokens": jnp.asarray(rollout.tokens), "attention_mask": jnp.asarray(rollout.attention_mask),
                 "response_mask": jnp.asarray(rollout.response_mask)}
        if kl_coef > 0:
            batch["ref_logp"] = self._ref_logprobs(self.frozen, batch["tokens"], batch["attention_mask"])
        if algo == "reinforce":
            batch["rewards"] = jnp.asarray(rollout.rewards)
        else:
            batch["advantages"] = group_advantages(jnp.asarray(rollout.rewards), group_size)
            batch["old_logp"] = self._chosen_logprobs(z, self.frozen, batch["tokens"], batch["attention_mask"])
        return batch

    def accuracy(self, z, examples: Sequence[Example], codec: PromptCodec, reward_fn, *, batch_size: int) -> float:
        return accuracy_with(self.patched(z), examples, codec, reward_fn, batch_size=batch_size)


class SVFPPOTrainer:
    """The seed's SVF PPO trainer, with a gradient that reaches z: rollouts with W'(z), then PPO (clipped
    surrogate, group-normalised advantages, `epochs` updates per batch) or REINFORCE updates of z only.

    `step(examples, reward_fn, seed=...)` -> (rollout, metrics); `z` (a list ordered like wrapper.keys) and
    `opt_state` are the training state; `z_vectors()` returns it keyed for `wrapper.save`.
    """

    def __init__(self, wrapper: SVFWrapper, codec: PromptCodec, *, algo: str = "ppo", lr: float = 2e-3,
                 grad_clip: float = 1e-3, kl_coef: float = 0.0, clip_eps: float = 0.2, epochs: int = 4,
                 group_size: int = 1, temperature: float = 0.0):
        self.policy, self.codec = SVFPolicy(wrapper), codec
        self.algo, self.kl_coef, self.epochs = algo, kl_coef, epochs if algo == "ppo" else 1
        self.group_size, self.temperature = group_size, temperature
        self.tx = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))
        self.z = self.policy.z_list()
        self.opt_state = self.tx.init(self.z)
        self._update = self.policy.make_update(self.tx, algo=algo, kl_coef=kl_coef, clip_eps=clip_eps)

    def step(self, examples: Sequence[Example], reward_fn, *, seed: int = 0,
             task_name: str = "task") -> tuple[Rollout, dict[str, float]]:
        rollout = self.policy.rollout(self.z, examples, self.codec, reward_fn, group_size=self.group_size,
                                      temperature=self.temperature, seed=seed, task_name=task_name)
        batch = self.policy.batch_from(self.z, rollout, algo=self.algo, kl_coef=self.kl_coef,
                                       group_size=self.group_size)
        for _ in range(self.epochs):
            self.z, self.opt_state, metrics = self._update(self.z, self.opt_state, batch)
        return rollout, {k: float(v) for k, v in metrics.items()}

    def accuracy(self, examples: Sequence[Example], reward_fn, *, batch_size: int) -> float:
        return self.policy.accuracy(self.z, examples, self.codec, reward_fn, batch_size=batch_size)

    def z_vectors(self, z: list[jax.Array] | None = None) -> dict[str, jax.Array]:
        return self.policy.z_dict(self.z if z is None else z)
