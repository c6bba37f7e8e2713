"""The shared decoder stack: embedding, pre-norm blocks, final norm, masks, positions and the KV cache.

Hyformer and the Llama-family models (Llama, Qwen2, Qwen3, Mistral, Gemma 3) are this stack with different
settings (`DecoderSpec`) and heads. Per layer, attention is global or a causal sliding window (transformers'
`layer_types`), and the sliding layers may have their own RoPE; a cache keeps every slot, and a sliding layer
masks the keys outside its window.
`DecoderSpec.layers` picks the layers' implementation ("auto", "tuned" or "plain"; docs/layers.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.layers import backend
from jaxmodels.layers.attention import Attention
from jaxmodels.layers.cache import KVCache
from jaxmodels.layers.dropout import dropout
from jaxmodels.layers.linear import Embed, Linear
from jaxmodels.layers.mlp import ACTIVATIONS, GatedMLP
from jaxmodels.layers.norms import RMS_FLAVOURS, LayerNorm, rms_norm
from jaxmodels.layers.rope import scaled_inverse_frequencies


LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """Everything the stack needs; each model family's config maps onto one of these."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    max_seq_len: int
    norm_eps: float = 1e-6
    final_norm: str = "rmsnorm"  # "rmsnorm" | "layernorm"
    final_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_interleaved: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_scaling: tuple[tuple[str, object], ...] = ()  # Hugging Face rope_parameters as sorted items
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    layers: str = "auto"  # "auto" | "tuned" | "plain", resolved at trace time (jaxmodels.layers.backend)
    # One of LAYER_TYPES per layer; () = every layer full_attention. A sliding layer's query at slot p sees the
    # keys at slots p - sliding_window + 1 .. p (transformers' sliding_window_causal_mask_function).
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None
    local_rope_theta: float | None = None  # RoPE of the sliding layers; None: the same as the full layers
    local_rope_scaling: tuple[tuple[str, object], ...] = ()
    qk_norm: bool = False  # RMSNorm over each q and k head before RoPE
    norm_flavour: str = "standard"  # every RMSNorm: "standard" (normed, cast, times w) | "offset" (Gemma)
    mlp_activation: str = "silu"  # "silu" (SwiGLU) | "gelu_tanh" (GeGLU)
    sandwich_norms: bool = False  # also normalise the attention and MLP outputs before the residual add (Gemma)
    embed_scale: float | None = None  # embeddings times this, cast to their dtype first (Gemma: sqrt(D))
    attn_scale: float | None = None  # score scale; None: head_dim ** -0.5
    logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap), applied by the LM head
    # Activation checkpointing: without a cache, each block's activations are recomputed in the backward
    # pass instead of stored (only the block inputs are kept); the same values and gradients.
    remat: bool = False

    def __post_init__(self):
        backend.check(self.layers, source="DecoderSpec.layers")
        if self.layer_types and len(self.layer_types) != self.n_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for n_layers={self.n_layers}")
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(f"unknown layer_types {unknown}; implemented: {', '.join(LAYER_TYPES)}")
        if "sliding_attention" in self.layer_types and not (self.sliding_window or 0) >= 1:
            raise ValueError(f"sliding_attention layers need sliding_window >= 1, got {self.sliding_window!r}")
        if self.norm_flavour not in RMS_FLAVOURS:
            raise ValueError(f"norm_flavour must be one of {sorted(RMS_FLAVOURS)}, got {self.norm_flavour!r}")
        if self.mlp_activation not in ACTIVATIONS:
            raise ValueError(f"mlp_activation must be one of {ACTIVATIONS}, got {self.mlp_activation!r}")

    def layer_type(self, i: int) -> str:
        return self.layer_types[i] if self.layer_types else "full_attention"

    def norm(self, dim: int, *, param_dtype, eps: float | None = None) -> nnx.Module:
        return rms_norm(dim, flavour=self.norm_flavour, eps=self.norm_eps if eps is None else eps,
                        param_dtype=param_dtype)


class Block(nnx.Module):
    """x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x)); dropout on both residual branches.

    With `spec.sandwich_norms` each branch output is normalised too (attn_out_norm, mlp_out_norm) before the add.
    `post_attn_norm` is always the norm in front of the MLP (Gemma's pre_feedforward_layernorm).
    """

    def __init__(self, spec: DecoderSpec, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.input_norm = spec.norm(spec.d_model, param_dtype=param_dtype)
        self.attn = Attention(spec.d_model, spec.n_heads, spec.n_kv_heads, spec.head_dim, qkv_bias=spec.qkv_bias,
                              o_bias=spec.o_bias,
                              rope_interleaved=spec.rope_interleaved, attn_dropout=spec.attn_dropout,
                              qk_norm=spec.qk_norm, norm_flavour=spec.norm_flavour, norm_eps=spec.norm_eps,
                              scale=spec.attn_scale, param_dtype=param_dtype, rngs=rngs)
        self.attn_out_norm = spec.norm(spec.d_model, param_dtype=param_dtype) if spec.sandwich_norms else None
        self.post_attn_norm = spec.norm(spec.d_model, param_dtype=param_dtype)
        self.mlp = GatedMLP(spec.d_model, spec.ffn_dim, use_bias=spec.mlp_bias, activation=spec.mlp_activation,
                            param_dtype=param_dtype, rngs=rngs)
        self.mlp_out_norm = spec.norm(spec.d_model, param_dtype=param_dtype) if spec.sandwich_norms else None
        self.resid_dropout = spec.resid_dropout

    def __call__(self, x, positions, mask, inv_freq, cache=None, cache_index=None, key=None, *, layers="auto"):
        k_probs, k_attn, k_mlp = jax.random.split(key, 3) if key is not None else (None, None, None)
        h, cache = self.attn(self.input_norm(x), positions, mask, inv_freq, cache, cache_index, k_probs,
                             layers=layers)
        if self.attn_out_norm is not None:
            h = self.attn_out_norm(h)
        x = x + dropout(h, self.resid_dropout, k_attn)
        h = self.mlp(self.post_attn_norm(x), layers=layers)
        if self.mlp_out_norm is not None:
            h = self.mlp_out_norm(h)
        x = x + dropout(h, self.resid_dropout, k_mlp)
        return x, cache


def _checkpointed(block: Block, x, positions, mask, inv_freq, key, layers: str):
    """block(x) [B, T, D] -> [B, T, D] without a cache, its activations recomputed in the backward pass."""
    def run(block, x, positions, mask, inv_freq, key):
        return block(x, positions, mask, inv_freq, None, None, key, layers=layers)[0]

    return nnx.remat(run)(block, x, positions, mask, inv_freq, key)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class Decoder(nnx.Module):
    """embed -> blocks -> final_norm. Subclasses add heads."""

    def __init__(self, spec: DecoderSpec, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.spec = spec
        self.embed = Embed(spec.vocab_size, spec.d_model, param_dtype=param_dtype, layers=spec.layers, rngs=rngs)
        self.blocks = nnx.List([Block(spec, param_dtype=param_dtype, rngs=rngs) for _ in range(spec.n_layers)])
        if spec.final_norm == "layernorm":
            self.final_norm = LayerNorm(spec.d_model, eps=spec.final_norm_eps, param_dtype=param_dtype)
        elif spec.final_norm == "rmsnorm":
            self.final_norm = spec.norm(spec.d_model, eps=spec.final_norm_eps, param_dtype=param_dtype)
        else:
            raise ValueError(f"final_norm must be 'rmsnorm' or 'layernorm', got {spec.final_norm!r}")

    def use_layers(self, layers: str) -> Decoder:
        """Switches this model to the "auto", "tuned" or "plain" layers, in place; returns the model.

        Replaces `spec` (which the stack's layers follow) and sets `layers` on every `Linear` and `Embed` of
        the model, so that heads a subclass calls itself (a tied or untied LM head) follow too. The spec is
        part of the graph definition: jitted functions of the model retrace.
        """
        backend.check(layers)
        self.spec = dataclasses.replace(self.spec, layers=layers)
        for _, module in nnx.iter_modules(self):
            if isinstance(module, (Linear, Embed)):
                module.layers = layers
        return self

    def use_remat(self, remat: bool = True) -> Decoder:
        """Turns activation checkpointing of the blocks on or off (spec.remat), in place; returns the model.
        Like `use_layers`, it changes the graph definition: jitted functions of the model retrace."""
        self.spec = dataclasses.replace(self.spec, remat=bool(remat))
        return self

    def init_cache(self, batch: int, max_len: int | None = None, dtype=None) -> KVCache:
        """An empty cache for `batch` rows and `max_len` slots (default and upper bound: max_seq_len)."""
        max_len = self.spec.max_seq_len if max_len is None else max_len
        if max_len > self.spec.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len={self.spec.max_seq_len}")
        return KVCache.create(n_layers=self.spec.n_layers, batch=batch, max_len=max_len,
                              n_kv_heads=self.spec.n_kv_heads, head_dim=self.spec.head_dim,
                              dtype=dtype or self.embed.dtype)

    def _check_inputs(self, input_ids, attention_mask, kv_caches):
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be an integer array of shape [B, T], got {input_ids.dtype} "
                             f"of shape {tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        limit = kv_caches.max_len if kv_caches is not None else self.spec.max_seq_len
        if t > limit:
            raise ValueError(f"sequence length {t} exceeds the {'cache length' if kv_caches else 'max_seq_len'} "
                             f"{limit}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected the shape of "
                             f"input_ids {tuple(input_ids.shape)}")
        if _is_concrete(input_ids) and input_ids.size:
            ids = np.asarray(input_ids)  # host copy: a jax reduction would be traced when called inside jit
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.spec.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.spec.vocab_size}) (vocab_size); "
                                 f"got values from {lo} to {hi}")

    def hidden_states(self, input_ids: jax.Array, *, causal: bool, attention_mask: jax.Array | None = None,
                      positions: jax.Array | None = None, kv_caches: KVCache | None = None,
                      dropout_key: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """input_ids [B, T] -> (final-normed hidden states [B, T, D], updated cache or None).

        attention_mask [B, T] (1 = real token, 0 = padding) masks padding keys. Positions default to
        the count of real tokens before each one (so left padding does not shift RoPE), continuing
        from the tokens already in the cache.
        """
        self._check_inputs(input_ids, attention_mask, kv_caches)
        b, t = input_ids.shape
        token_mask = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        if kv_caches is not None and not causal:
            raise ValueError("a KV cache is only used by the causal task 'lm'")
        if positions is None:
            before = 0 if kv_caches is None else jnp.sum(kv_caches.key_mask, axis=1, dtype=jnp.int32)[:, None]
            positions = jnp.maximum(jnp.cumsum(token_mask, axis=1, dtype=jnp.int32) - 1, 0) + before
        if kv_caches is None:
            key_mask, q_slots, k_slots, index = token_mask, jnp.arange(t), jnp.arange(t), None
        else:
            kv_caches = kv_caches.with_tokens(token_mask)
            index = kv_caches.index
            key_mask, q_slots, k_slots = kv_caches.key_mask, index + jnp.arange(t), jnp.arange(kv_caches.max_len)
        mask = jnp.broadcast_to(key_mask[:, None, :], (b, t, key_mask.shape[1]))  # [B, T, S]
        if causal:
            mask = mask & (k_slots[None, :] <= q_slots[:, None])[None]
        masks, inv_freqs = self._layer_masks(mask, q_slots, k_slots, causal), self._inverse_frequencies()

        layers = backend.resolve(self.spec.layers)
        x = self.embed(input_ids)
        if self.spec.embed_scale is not None:
            x = x * jnp.asarray(np.float32(self.spec.embed_scale)).astype(x.dtype)  # as transformers rounds it
        keys = [None] * len(self.blocks) if dropout_key is None else list(jax.random.split(dropout_key, len(self.blocks)))
        new_layers = []
        for i, block in enumerate(self.blocks):
            layer_cache = None if kv_caches is None else kv_caches.layers[i]
            kind = self.spec.layer_type(i)
            if self.spec.remat and layer_cache is None:
                x = _checkpointed(block, x, positions, masks[kind], inv_freqs[kind], keys[i], layers)
            else:
                x, layer_cache = block(x, positions, masks[kind], inv_freqs[kind], layer_cache, index, keys[i],
                                       layers=layers)
            new_layers.append(layer_cache)
        x = self.final_norm(x)
        if kv_caches is not None:
            kv_caches = dataclasses.replace(kv_caches, layers=new_layers, index=kv_caches.index + t)
        return x, kv_caches

    def _layer_masks(self, mask, q_slots, k_slots, causal: bool) -> dict[str, jax.Array]:
        """mask [B, T, S] -> {layer type: mask [B, T, S]}; a sliding layer also drops keys outside its window.

        The window counts cache slots, as transformers does; with left padding only (what `generate` takes),
        real tokens fill consecutive slots, so it is the same as counting real tokens.
        """
        masks = {"full_attention": mask}
        if "sliding_attention" in self.spec.layer_types:
            if not causal:
                raise ValueError("sliding-window attention is causal; it has no bidirectional task")
            inside = k_slots[None, :] > q_slots[:, None] - self.spec.sliding_window  # [T, S]
            masks["sliding_attention"] = mask & inside[None]
        return masks

    def _inverse_frequencies(self) -> dict[str, jax.Array]:
        """{layer type: RoPE inverse frequencies [H/2]}."""
        spec = self.spec
        full = scaled_inverse_frequencies(spec.head_dim, spec.rope_theta, dict(spec.rope_scaling))
        if spec.local_rope_theta is None:
            return {"full_attention": full, "sliding_attention": full}
        return {"full_attention": full, "sliding_attention": scaled_inverse_frequencies(
            spec.head_dim, spec.local_rope_theta, dict(spec.local_rope_scaling))}
