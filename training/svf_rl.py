"""RL policy machinery: prompts -> rollouts with our jitted `generate` -> rewards -> jitted updates of z (SVF)
or of any other Policy's parameters (the LoRA baseline).

Letters: B rollouts (prompts x group size), P padded prompt length, G new tokens, S = P + G, V vocabulary.
Prompts are left-padded to one fixed P per run, so generation and the update compile once.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmodels.generate import generate
from jaxmodels.svf import SVFWrapper
from jaxmodels.svf.patch import masks_from_z, patch_state
from jaxmodels_training.svf_losses import group_advantages, kl_ref_pi, ppo_loss, reinforce_loss
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
        eos = getattr(tokenizer, "eos_id", None)
        self.stop_ids = tuple(dict.fromkeys(i for i in (self.stop_id, eos) if i is not None))  # either ends a reply

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
                                 eos_token_id=codec.stop_ids, attention_mask=mask, pad_token_id=codec.pad_id))
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


def window_logprobs(model, tokens: jax.Array, attention_mask: jax.Array, start: int = 1):
    """Log-probs of tokens[:, start:] given their prefixes -> (log-softmax [B, S-start, V], chosen [B, S-start]).

    The LM head runs on the window's positions only (start - 1 .. S - 2): a rollout's prompt needs the decoder
    body (its keys and values depend on the trained weights) but not its [P, V] logits.
    """
    x, _ = model.hidden_states(tokens, causal=True, attention_mask=attention_mask)  # [B, S, D]
    logits = model.head_logits(x[:, start - 1:-1])  # [B, S-start, V]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(logp, tokens[:, start:, None], axis=-1)[..., 0]
    return logp, chosen


class Policy(abc.ABC):
    """What an RL run trains over a frozen base model: a pytree theta and `params_for(theta, frozen)`, the base
    parameter State it computes with (pure, inside jit / grad). Subclasses: SVFPolicy (theta = z per matrix),
    `svf_lora.LoRAPolicy` (theta = LoRA adapters). Log-probs, updates and rollouts are shared.
    """

    def __init__(self, graphdef, rest, frozen):
        self.graphdef, self.rest, self.frozen = graphdef, rest, frozen  # frozen[0]: the base parameter State
        self._logprobs = jax.jit(self.logprobs, static_argnums=4)
        self._ref_logprobs = jax.jit(lambda frozen, tokens, mask, start: self.logprobs(None, frozen, tokens, mask,
                                                                                       start)[0],
                                     static_argnums=3)
        # PPO's old log-probs need the chosen tokens' [B, G] only, not the whole [B, G, V] log-softmax
        self._chosen_logprobs = jax.jit(lambda theta, frozen, tokens, mask, start: self.logprobs(
            theta, frozen, tokens, mask, start)[1], static_argnums=4)

    @abc.abstractmethod
    def params_for(self, theta, frozen) -> nnx.State:
        """Pure: the parameter State computing with theta (frozen as passed through jit)."""

    @abc.abstractmethod
    def theta0(self):
        """A fresh copy of the initial theta (updates donate theirs)."""

    @abc.abstractmethod
    def patched(self, theta):
        """An nnx model computing with theta (None: the base), for generation."""

    def num_params(self, theta) -> int:
        return sum(int(np.size(x)) for x in jax.tree.leaves(theta))

    def model_for(self, theta, frozen):
        params = frozen[0] if theta is None else self.params_for(theta, frozen)
        return nnx.merge(self.graphdef, params, self.rest)

    def logprobs(self, theta, frozen, tokens, attention_mask, start: int = 1):
        """(log-softmax [B, S-start, V], chosen [B, S-start]) under theta (None: the base model)."""
        return window_logprobs(self.model_for(theta, frozen), tokens, attention_mask, start)

    def rollout(self, theta, examples: Sequence[Example], codec: PromptCodec, reward_fn, *, group_size: int = 1,
                temperature: float = 0.0, seed: int = 0, task_name: str = "task") -> Rollout:
        """Generates group_size completions per example with theta and scores them."""
        return rollout_with(self.patched(theta), examples, codec, reward_fn, group_size=group_size,
                            temperature=temperature, seed=seed, task_name=task_name)

    def make_update(self, tx: optax.GradientTransformation, *, algo: str, kl_coef: float, clip_eps: float,
                    start: int = 1):
        """-> update(theta, opt_state, batch) -> (theta, opt_state, metrics), jitted, theta and opt_state donated.

        batch: tokens, attention_mask, response_mask [B, S]; rewards or advantages [B]; old_logp [B, S-start]
        (PPO); ref_logp [B, S-start, V] when kl_coef > 0. Positions before `start` (the padded prompt length:
        no response token lies there) are left out of the log-probs.
        """
        if algo not in ("reinforce", "ppo"):
            raise ValueError(f"unknown RL algorithm {algo!r}; choose 'reinforce' or 'ppo'")
        frozen = self.frozen

        def objective(theta, frozen, batch):
            logp, chosen = self.logprobs(theta, frozen, batch["tokens"], batch["attention_mask"], start)
            mask = batch["response_mask"][:, start:]
            kl = kl_ref_pi(batch["ref_logp"], logp) if "ref_logp" in batch else None
            if algo == "reinforce":
                return reinforce_loss(chosen, mask, batch["rewards"], kl, kl_coef)
            return ppo_loss(chosen, batch["old_logp"], mask, batch["advantages"], kl, clip_eps=clip_eps,
                            kl_coef=kl_coef)

        @partial(jax.jit, donate_argnums=(0, 1))
        def update(theta, opt_state, frozen, batch):
            (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(theta, frozen, batch)
            updates, opt_state = tx.update(grads, opt_state, theta)
            return optax.apply_updates(theta, updates), opt_state, {"loss": loss,
                                                                    "grad_norm": optax.global_norm(grads), **aux}

        return lambda theta, opt_state, batch: update(theta, opt_state, frozen, batch)

    def batch_from(self, theta, rollout: Rollout, *, algo: str, kl_coef: float, group_size: int,
                   start: int = 1) -> dict:
        batch = {"tokens": jnp.asarray(rollout.tokens), "attention_mask": jnp.asarray(rollout.attention_mask),
                 "response_mask": jnp.asarray(rollout.response_mask)}
        if kl_coef > 0:
            batch["ref_logp"] = self._ref_logprobs(self.frozen, batch["tokens"], batch["attention_mask"], start)
        if algo == "reinforce":
            batch["rewards"] = jnp.asarray(rollout.rewards)
        else:
            batch["advantages"] = group_advantages(jnp.asarray(rollout.rewards), group_size)
            batch["old_logp"] = self._chosen_logprobs(theta, self.frozen, batch["tokens"], batch["attention_mask"],
                                                      start)
        return batch

    def accuracy(self, theta, examples: Sequence[Example], codec: PromptCodec, reward_fn, *,
                 batch_size: int) -> float:
        return accuracy_with(self.patched(theta), examples, codec, reward_fn, batch_size=batch_size)


class SVFPolicy(Policy):
    """theta = z as a list ordered like wrapper.keys (orbax- and optax-friendly)."""

    def __init__(self, wrapper: SVFWrapper):
        self.wrapper = wrapper
        self.keys = tuple(wrapper.keys)
        super().__init__(wrapper.graphdef, wrapper.rest, (wrapper.params, wrapper.components))

    def params_for(self, z, frozen) -> nnx.State:
        params, comps = frozen
        return patch_state(params, comps, masks_from_z(dict(zip(self.keys, z))), self.wrapper.kernel_shapes)

    def theta0(self) -> list[jax.Array]:
        return self.z_list()

    def z_list(self, z: dict | None = None) -> list[jax.Array]:
        z = self.wrapper.z_vectors if z is None else z
        return [jnp.array(z[k], copy=True) for k in self.keys]  # copies: updates donate their z

    def z_dict(self, z: list[jax.Array]) -> dict[str, jax.Array]:
        return dict(zip(self.keys, z))

    def patched(self, z: list[jax.Array] | None):
        return self.wrapper.merge(self.wrapper.params) if z is None else self.wrapper.patch_weights(self.z_dict(z))


class SVFPPOTrainer:
    """The seed's SVF PPO trainer, with a gradient that reaches z: rollouts with W'(z), then PPO (clipped
    surrogate, group-normalised advantages, `epochs` updates per batch) or REINFORCE updates of z only.

    `step(examples, reward_fn, seed=...)` -> (rollout, metrics); `z` (a list ordered like wrapper.keys) and
    `opt_state` are the training state; `z_vectors()` returns it keyed for `wrapper.save`.
    """

    def __init__(self, wrapper: SVFWrapper | None, codec: PromptCodec, *, algo: str = "ppo", lr: float = 2e-3,
                 grad_clip: float = 1e-3, kl_coef: float = 0.0, clip_eps: float = 0.2, epochs: int = 4,
                 group_size: int = 1, temperature: float = 0.0, policy: Policy | None = None):
        if (wrapper is None) == (policy is None):
            raise ValueError("pass an SVFWrapper or another Policy (e.g. svf_lora.LoRAPolicy), not both")
        self.policy, self.codec = (SVFPolicy(wrapper) if policy is None else policy), codec
        self.algo, self.kl_coef, self.epochs = algo, kl_coef, epochs if algo == "ppo" else 1
        self.group_size, self.temperature = group_size, temperature
        self.start = codec.prompt_len  # the first response position of every rollout
        self.tx = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))
        self.z = self.policy.theta0()
        self.opt_state = self.tx.init(self.z)
        self._update = self.policy.make_update(self.tx, algo=algo, kl_coef=kl_coef, clip_eps=clip_eps,
                                               start=self.start)

    def step(self, examples: Sequence[Example], reward_fn, *, seed: int = 0,
             task_name: str = "task") -> tuple[Rollout, dict[str, float]]:
        rollout = self.policy.rollout(self.z, examples, self.codec, reward_fn, group_size=self.group_size,
                                      temperature=self.temperature, seed=seed, task_name=task_name)
        batch = self.policy.batch_from(self.z, rollout, algo=self.algo, kl_coef=self.kl_coef,
                                       group_size=self.group_size, start=self.start)
        for _ in range(self.epochs):
            self.z, self.opt_state, metrics = self._update(self.z, self.opt_state, batch)
        return rollout, {k: float(v) for k, v in metrics.items()}

    def accuracy(self, examples: Sequence[Example], reward_fn, *, batch_size: int) -> float:
        return self.policy.accuracy(self.z, examples, self.codec, reward_fn, batch_size=batch_size)

    def z_vectors(self, z: list[jax.Array] | None = None) -> dict[str, jax.Array]:
        return self.policy.z_dict(self.z if z is None else z)
