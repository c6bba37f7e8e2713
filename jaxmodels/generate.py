"""Jitted autoregressive generation with a preallocated KV cache: greedy, temperature, top-k, top-p.

Works for any decoder in this package whose call accepts `(input_ids, task="lm", attention_mask,
kv_caches=...)` and that has `init_cache`. Batches are left-padded: pass attention_mask with zeros on the
left; positions count real tokens only, so each row generates as it would alone.

Shapes are bucketed (docs/compilation.md): `generate` left-pads the prompt to a multiple of `bucket` tokens
and sizes the cache for max_new_tokens rounded up to the bucket, while the loop stops at the real
max_new_tokens (a traced value), so a new prompt length or token budget within a bucket reuses the compiled
program. `round_up` and `left_pad` are shared with `jaxmodels.streaming`, which buckets chat prompts the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels import sharding
from jaxmodels.layers.backend import inference_jit


def _filter_logits(logits: jax.Array, top_k: int | None, top_p: jax.Array | None) -> jax.Array:
    """Masks logits [B, V] outside the top-k set and outside the smallest set with probability >= top_p."""
    neg = jnp.finfo(logits.dtype).min
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return logits


def _next_token(logits, key, temperature, top_k, top_p):
    """logits [B, V] -> token ids [B] int32; temperature None means greedy."""
    if temperature is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = _filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sampling:
    """What `sample_step` draws from, as a jitted function takes it: temperature and top_p are traced arrays
    (changing their values does not recompile), top_k and whether each applies (None) are static."""

    temperature: jax.Array | None
    top_p: jax.Array | None
    top_k: int | None = dataclasses.field(default=None, metadata=dict(static=True))

    @classmethod
    def make(cls, vocab_size: int, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None) -> Sampling:
        """Checks the settings; temperature 0 is greedy (top_k and top_p then do nothing)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= vocab_size:
            raise ValueError(f"top_k must lie in [1, {vocab_size}], got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if temperature == 0:
            return cls(None, None, None)
        return cls(jnp.float32(temperature), None if top_p is None else jnp.float32(top_p),
                   None if top_k is None else int(top_k))


def sample_step(logits: jax.Array, key: jax.Array, sampling: Sampling) -> tuple[jax.Array, jax.Array]:
    """One token per row from logits [B, V] -> (token ids [B] int32, the key for the next step).

    Every decoding loop splits its key this way once per token, so equal seeds give equal random streams.
    """
    key, sub = jax.random.split(key)
    return _next_token(logits, sub, sampling.temperature, sampling.top_k, sampling.top_p), key


def round_up(n: int, bucket: int | None) -> int:
    """n rounded up to a multiple of `bucket` (None: n itself), the length a jitted program is compiled for."""
    return n if bucket is None else -(-n // bucket) * bucket


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads input_ids and attention_mask [B, T] with zeros to [B, length] (int32): the padding is masked
    out of attention and positions, so the model computes what it computes on the unpadded rows."""
    b, t = input_ids.shape
    ids, mask = np.zeros((b, length), np.int32), np.zeros((b, length), np.int32)
    ids[:, length - t:], mask[:, length - t:] = input_ids, attention_mask
    return ids, mask


def check_bucket(bucket: int | None) -> None:
    if bucket is not None and (isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1):
        raise ValueError(f"bucket must be a positive int or None, got {bucket!r}")


def eos_ids(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """One EOS id or several -> a tuple of ints (hashable, so it can be a static argument); None stays None."""
    return None if eos_token_id is None else tuple(int(e) for e in np.atleast_1d(eos_token_id))


@partial(inference_jit, static_argnames=("graphdef",))
def forward_logits(graphdef, state, input_ids: jax.Array) -> jax.Array:
    """The model's logits [B, T, V] for input_ids [B, T], jitted for inference (the precise CPU dots).

    `(graphdef, state)` is `nnx.split(model)`; models of one structure share the compiled function, so swapping
    in another state of the same shapes (other weights) does not recompile."""
    return nnx.merge(graphdef, state)(input_ids).logits


# Compiled with the precise CPU dots (jaxmodels.layers.backend.inference_jit, docs/precision.md).
@partial(inference_jit, static_argnames=("graphdef", "room", "eos_token_id", "pad_token_id"))
def _generate(graphdef, state, input_ids, attention_mask, key, sampling, max_new_tokens, *, room, eos_token_id,
              pad_token_id):
    """input_ids, attention_mask [B, P] -> tokens [B, P + room]: the prompt, then up to max_new_tokens (traced,
    <= room) new tokens, padding after them. The cache has P + room slots."""
    model = nnx.merge(graphdef, state)
    b, t = input_ids.shape
    cache = model.init_cache(b, t + room)
    out = model(input_ids, task="lm", attention_mask=attention_mask, kv_caches=cache)
    tokens = jnp.full((b, t + room), pad_token_id, jnp.int32).at[:, :t].set(input_ids)

    def cond(carry):
        i, _, _, _, done, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, tokens, cache, logits, done, key = carry
        tok, key = sample_step(logits, key, sampling)
        tok = jnp.where(done, pad_token_id, tok)
        tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, t + i))
        if eos_token_id is not None:
            done = done | jnp.isin(tok, jnp.asarray(eos_token_id, jnp.int32))
        out = model(tok[:, None], task="lm", attention_mask=jnp.ones((b, 1), jnp.int32), kv_caches=cache)
        return i + 1, tokens, out.extras["kv_caches"], out.logits[:, -1], done, key

    carry = (jnp.int32(0), tokens, out.extras["kv_caches"], out.logits[:, -1], jnp.zeros((b,), bool), key)
    return jax.lax.while_loop(cond, body, carry)[1]


def generate(model: nnx.Module, input_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0, eos_token_id: int | Sequence[int] | None = None,
             attention_mask=None, pad_token_id: int | None = None, *, bucket: int | None = 64) -> jax.Array:
    """Returns token ids [B, T + max_new_tokens]: the prompt followed by the new tokens.

    temperature 0 is greedy; otherwise sampling from softmax(logits / temperature) restricted by top_k and
    top_p, driven by `seed` (same seed, same tokens). Once a row emits eos_token_id, the rest of it is
    pad_token_id (default: the first eos_token_id, else 0); the loop stops early when every row is done.
    eos_token_id may list several ids (as Qwen2 configs do).

    The program is compiled for the prompt length T and max_new_tokens each rounded up to a multiple of
    `bucket` (kept within the model's max_seq_len), so lengths within a bucket share one compilation; the
    tokens are those of the exact shapes (`bucket=None`), which compile for every new T and max_new_tokens.

    A model placed on a mesh (`jaxmodels.sharding.shard_model`) generates there: rows split over the batch
    axes (when they divide B), tensor-parallel heads and MLP as its parameters are split; the same tokens.
    """
    check_bucket(bucket)
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must have shape [B, T] with T >= 1, got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    b, t = input_ids.shape
    limit = model.spec.max_seq_len
    if t + max_new_tokens > limit:
        raise ValueError(f"prompt length {t} + max_new_tokens {max_new_tokens} exceeds the "
                         f"model's max_seq_len {limit}")
    sampling = Sampling.make(model.spec.vocab_size, temperature, top_k, top_p)
    lo, hi = int(np.min(input_ids)), int(np.max(input_ids))
    if lo < 0 or hi >= model.spec.vocab_size:
        raise ValueError(f"token ids must lie in [0, {model.spec.vocab_size}); got values from {lo} to {hi}")
    attention_mask = np.ones((b, t), np.int32) if attention_mask is None else np.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(input_ids.shape)}")
    if not np.all(attention_mask[:, -1] == 1):
        raise ValueError("generation needs left padding: the last prompt position of every row must be a real token")
    eos_token_id = eos_ids(eos_token_id)
    if pad_token_id is None:
        pad_token_id = eos_token_id[0] if eos_token_id else 0
    room = min(round_up(max_new_tokens, bucket), limit - t)  # >= max_new_tokens, checked above
    p = min(round_up(t, bucket), limit - room)  # >= t
    ids, mask = left_pad(input_ids, attention_mask, p)
    graphdef, state = nnx.split(model)
    mesh = sharding.mesh_of(state)
    if mesh is None:
        tokens = _generate(graphdef, state, ids, mask, jax.random.key(seed), sampling, jnp.int32(max_new_tokens),
                           room=room, eos_token_id=eos_token_id, pad_token_id=int(pad_token_id))
    else:  # a sharded model (jaxmodels.sharding): the rows split over the batch axes, XLA partitions the rest
        with jax.set_mesh(mesh):
            tokens = _generate(graphdef, state, sharding.place_batch(ids, mesh), sharding.place_batch(mask, mesh),
                               jax.random.key(seed), sampling, jnp.int32(max_new_tokens), room=room,
                               eos_token_id=eos_token_id, pad_token_id=int(pad_token_id))
    return tokens[:, p - t:p + max_new_tokens]
