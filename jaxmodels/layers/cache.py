"""A preallocated key/value cache for incremental decoding.

Slots are filled left to right; `index` counts the filled slots (shared by the batch) and `key_mask`
marks which filled slots hold real tokens (left padding stays masked for the whole generation).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCache:
    k: jax.Array  # [B, S, K, H]
    v: jax.Array  # [B, S, K, H]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    layers: list[LayerCache]
    key_mask: jax.Array  # [B, S] bool: slot holds a real (non-padding) token
    index: jax.Array  # [] int32: number of slots written so far

    @classmethod
    def create(cls, *, n_layers: int, batch: int, max_len: int, n_kv_heads: int, head_dim: int,
               dtype=jnp.float32) -> KVCache:
        shape = (batch, max_len, n_kv_heads, head_dim)
        layers = [LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(n_layers)]
        return cls(layers, jnp.zeros((batch, max_len), bool), jnp.zeros((), jnp.int32))

    @property
    def max_len(self) -> int:
        return self.key_mask.shape[1]

    def with_tokens(self, token_mask: jax.Array) -> KVCache:
        """Records token_mask [B, T] for the T slots about to be written (layers are written per layer)."""
        key_mask = jax.lax.dynamic_update_slice(self.key_mask, token_mask.astype(bool), (0, self.index))
        return dataclasses.replace(self, key_mask=key_mask)


def write_layer(cache: LayerCache, index: jax.Array, k: jax.Array, v: jax.Array) -> LayerCache:
    """Writes k, v [B, T, K, H] at slots index..index+T-1."""
    start = (0, index, 0, 0)
    return LayerCache(jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start),
                      jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start))
