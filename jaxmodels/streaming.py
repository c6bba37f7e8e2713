"""Token-by-token generation for one sequence: a jitted prefill and a jitted one-token step over the KV cache.

`Streamer(model, max_len)` fixes the cache length for a session and left-pads every prompt up to a multiple of
`bucket`, so a session compiles the step once and the prefill once per bucket, however the prompt lengths vary
(a chat re-templates its growing history each turn). `stream` yields the same tokens as
`jaxmodels.generate.generate` with the same settings and seed: both draw each token with `sample_step` from
the same key sequence, and padding is masked out of attention and positions.

`Detokenizer` turns the streamed ids back into text a piece at a time, emitting only text that later tokens
cannot change (no half of a multi-byte character, no prefix a BPE merge still rewrites).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.generate import Sampling, check_bucket, eos_ids, left_pad, round_up, sample_step
from jaxmodels.layers.backend import inference_jit


def _prefill(graphdef, state, input_ids, attention_mask, key, sampling, *, max_len):
    """input_ids, attention_mask [1, P] -> (first new token [1], filled cache, next key)."""
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(input_ids.shape[0], max_len)
    out = model(input_ids, task="lm", attention_mask=attention_mask, kv_caches=cache)
    tok, key = sample_step(out.logits[:, -1], key, sampling)
    return tok, out.extras["kv_caches"], key


def _step(graphdef, state, tok, cache, key, sampling):
    """Feeds token tok [1] through the model and draws the next one -> (token [1], cache, key)."""
    model = nnx.merge(graphdef, state)
    out = model(tok[:, None], task="lm", attention_mask=jnp.ones((tok.shape[0], 1), jnp.int32), kv_caches=cache)
    tok, key = sample_step(out.logits[:, -1], key, sampling)
    return tok, out.extras["kv_caches"], key


class Streamer:
    """Streams generation from `model` with a cache of `max_len` slots (default: the model's max_seq_len).

    Prompts are left-padded up to a multiple of `bucket` tokens (None: not at all). The model's parameters are
    captured when the streamer is built; the prefill and step functions compile on first use and are reused for
    the session.
    """

    def __init__(self, model: nnx.Module, max_len: int | None = None, bucket: int | None = 64):
        limit = model.spec.max_seq_len
        max_len = limit if max_len is None else int(max_len)
        if not 2 <= max_len <= limit:
            raise ValueError(f"the context length must lie in [2, {limit}] (the model's max_seq_len), got {max_len}")
        check_bucket(bucket)
        self.max_len, self.bucket = max_len, bucket
        self.vocab_size = model.spec.vocab_size
        graphdef, self._state = nnx.split(model)
        self._prefill = inference_jit(partial(_prefill, graphdef), static_argnames=("max_len",))
        # The cache is updated in place: the step's input cache is dead once the step has run.
        self._step = inference_jit(partial(_step, graphdef), donate_argnames=("cache",))

    def padded_length(self, prompt_len: int, max_new_tokens: int) -> int:
        """The prefill length P for a prompt: rounded up to the bucket, but at most what leaves room for
        `max_new_tokens` (the prompt and every new token but the last occupy cache slots)."""
        return min(round_up(prompt_len, self.bucket), self.max_len - max_new_tokens + 1)

    def stream(self, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0,
               eos_token_id: int | Sequence[int] | None = None) -> Iterator[int]:
        """Yields up to `max_new_tokens` token ids (Python ints) continuing prompt_ids [T]; stops after the
        first EOS, which is yielded. Settings as `jaxmodels.generate.generate`; the checks run before the
        first token is computed (when the generator is created)."""
        prompt = np.asarray(prompt_ids)
        if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
            raise ValueError(f"prompt_ids must be a non-empty 1-D array of token ids, got {prompt.dtype} "
                             f"of shape {prompt.shape}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        t = prompt.size
        if t + max_new_tokens > self.max_len:
            raise ValueError(f"prompt length {t} + max_new_tokens {max_new_tokens} exceeds the context length "
                             f"{self.max_len}")
        if prompt.min() < 0 or prompt.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got values from {prompt.min()} to "
                             f"{prompt.max()}")
        sampling = Sampling.make(self.vocab_size, temperature, top_k, top_p)
        ids, mask = left_pad(prompt[None], np.ones((1, t), np.int32), self.padded_length(t, max_new_tokens))
        return self._tokens(ids, mask, jax.random.key(seed), sampling, max_new_tokens, set(eos_ids(eos_token_id) or ()))

    def _tokens(self, ids, mask, key, sampling, max_new_tokens, eos) -> Iterator[int]:
        tok, cache, key = self._prefill(self._state, ids, mask, key, sampling, max_len=self.max_len)
        step = self._step.jitted(self._state)  # the compile options follow the state's dtype: chosen once, not per token
        for i in range(max_new_tokens):
            token = int(tok[0])
            yield token
            if token in eos or i == max_new_tokens - 1:
                return
            tok, cache, key = step(self._state, tok, cache, key, sampling)


def stream(model: nnx.Module, prompt_ids, max_new_tokens: int, **kwargs) -> Iterator[int]:
    """One-off `Streamer(model, len(prompt_ids) + max_new_tokens).stream(...)`: compiles for this call alone."""
    return Streamer(model, len(prompt_ids) + max_new_tokens).stream(prompt_ids, max_new_tokens, **kwargs)


class Detokenizer:
    """Incremental decoding: `push(token_id)` returns the text that token completes, `flush()` the rest.

    Each push decodes a short window, the tokens since the last emitted piece plus the ones before it (so a
    decoder that treats a sequence's first token differently, like SentencePiece's leading space, sees the
    same context both times), and emits the decoded text past what was already emitted once it no longer
    ends in U+FFFD (an incomplete UTF-8 sequence). Concatenated, the pieces equal `decode(all ids)`.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # window start: the tokens before the last emitted piece
        self._read = 0  # tokens up to here are emitted

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        done = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        if len(text) <= len(done) or text.endswith("\ufffd") or not text.startswith(done):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done):]

    def flush(self) -> str:
        """What is left (incomplete characters included, as U+FFFD); the detokenizer then starts afresh."""
        done = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        self._ids, self._prefix, self._read = [], 0, 0
        return text[len(done):] if text.startswith(done) else ""
