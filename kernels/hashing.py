"""The original's stable 64-bit hash and hashed n-gram count features.

stable_hash(values, seed), all arithmetic modulo 2^64:
    acc = 0x9E3779B185EBCA87 ^ seed
    for v in values: acc ^= (v + 0x9E3779B1) mod 2^64;  acc = acc * 0xC2B2AE3D27D4EB4F + 0x165667B19E3779F9
hashed_ngram_features(tokens, dim, ngram, num_hashes, seed): for every window of `ngram` consecutive tokens and
every h in [0, num_hashes), vec[stable_hash(window, seed + h) % dim] += 1.

Host: pure Python `stable_hash` (the reference) and a numba kernel over uint64. Device: JAX has no uint64 without
x64 mode, so `hashed_ngram_features_jax` carries each 64-bit word as two uint32 halves and multiplies with 16-bit
limbs; it is bit-identical to the host version.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numba
import numpy as np

_MASK = (1 << 64) - 1
_INIT = 0x9E3779B185EBCA87
_ADD = 0x9E3779B1
_MUL = 0xC2B2AE3D27D4EB4F
_INC = 0x165667B19E3779F9


def stable_hash(values, seed: int = 0) -> int:
    """Reference 64-bit hash of a sequence of ints (Python ints, exact wraparound)."""
    acc = (_INIT ^ seed) & _MASK
    for v in values:
        acc ^= (int(v) + _ADD) & _MASK
        acc = (acc * _MUL + _INC) & _MASK
    return acc


def _check(tokens: np.ndarray, dim: int, ngram: int, num_hashes: int) -> None:
    if tokens.ndim != 1:
        raise ValueError(f"hashed_ngram_features: tokens must have shape [T], got {tokens.shape}")
    if dim < 1 or ngram < 1 or num_hashes < 1:
        raise ValueError(f"hashed_ngram_features: dim, ngram and num_hashes must be >= 1, "
                         f"got dim={dim}, ngram={ngram}, num_hashes={num_hashes}")


@numba.njit(cache=True)
def _ngram_counts(tokens, dim, ngram, num_hashes, seed, out):
    init = np.uint64(_INIT)
    add = np.uint64(_ADD)
    mul = np.uint64(_MUL)
    inc = np.uint64(_INC)
    for i in range(tokens.shape[0] - ngram + 1):
        for h in range(num_hashes):
            acc = init ^ np.uint64(seed + h)
            for k in range(ngram):
                acc ^= np.uint64(tokens[i + k]) + add
                acc = acc * mul + inc
            out[acc % np.uint64(dim)] += 1.0


def hashed_ngram_features(tokens, dim: int, ngram: int = 2, num_hashes: int = 2, seed: int = 0) -> np.ndarray:
    """Hashed n-gram counts of tokens [T] (non-negative ints) -> float32 [dim] (numba host kernel)."""
    tokens = np.asarray(tokens)
    _check(tokens, dim, ngram, num_hashes)
    if tokens.size and tokens.min() < 0:
        raise ValueError("hashed_ngram_features: token ids must be non-negative")
    out = np.zeros(dim, np.float32)
    _ngram_counts(tokens.astype(np.uint64), dim, ngram, num_hashes, seed, out)
    return out


def reference_hashed_ngram_features(tokens, dim: int, ngram: int = 2, num_hashes: int = 2,
                                    seed: int = 0) -> np.ndarray:
    """Plain Python reference of hashed_ngram_features."""
    tokens = [int(t) for t in tokens]
    out = np.zeros(dim, np.float32)
    for i in range(len(tokens) - ngram + 1):
        for h in range(num_hashes):
            out[stable_hash(tokens[i:i + ngram], seed + h) % dim] += 1.0
    return out


# ---- device version: 64-bit words as (hi, lo) uint32 pairs -------------------------------------------------

def _split(c: int) -> tuple[jax.Array, jax.Array]:
    return jnp.uint32(c >> 32), jnp.uint32(c & 0xFFFFFFFF)


def _mul32_wide(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Full 64-bit product of two uint32 arrays as (hi, lo), by 16-bit limbs."""
    a0, a1 = a & 0xFFFF, a >> 16
    b0, b1 = b & 0xFFFF, b >> 16
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
    lo = (p00 & 0xFFFF) | (mid << 16)
    hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
    return hi, lo


def _add64(ah, al, bh, bl):
    lo = al + bl
    carry = (lo < al).astype(jnp.uint32)
    return ah + bh + carry, lo


def _mul64(ah, al, bh, bl):
    hi, lo = _mul32_wide(al, bl)
    return hi + al * bh + ah * bl, lo


def _mod64(h: jax.Array, lo: jax.Array, dim: int) -> jax.Array:
    """(h * 2^32 + lo) mod dim for dim < 2^16, without 64-bit integers."""
    r = h % dim
    for _ in range(2):  # r * 2^32 = r * 2^16 * 2^16, reduced after each 2^16 factor
        r = (r * 0x10000) % dim
    return (r + lo % dim) % dim


def hashed_ngram_features_jax(tokens: jax.Array, dim: int, ngram: int = 2, num_hashes: int = 2,
                              seed: int = 0) -> jax.Array:
    """Jittable hashed n-gram counts: tokens [T] (non-negative, < 2^32) -> float32 [dim]; dim must be < 2^16."""
    if not 1 <= dim < 1 << 16:
        raise ValueError(f"hashed_ngram_features_jax: dim must be in [1, 65536) (32-bit modular reduction), got {dim}")
    tokens = jnp.asarray(tokens).astype(jnp.uint32)
    if tokens.ndim != 1:
        raise ValueError(f"hashed_ngram_features_jax: tokens must have shape [T], got {tokens.shape}")
    if ngram < 1 or num_hashes < 1:
        raise ValueError(f"hashed_ngram_features_jax: ngram and num_hashes must be >= 1, got {ngram}, {num_hashes}")
    n = tokens.shape[0] - ngram + 1
    if n <= 0:
        return jnp.zeros(dim, jnp.float32)
    add_h, add_l = _split(_ADD)
    mul_h, mul_l = _split(_MUL)
    inc_h, inc_l = _split(_INC)
    counts = jnp.zeros(dim, jnp.float32)
    for h in range(num_hashes):
        ah, al = _split(_INIT ^ (seed + h))
        ah = jnp.broadcast_to(ah, (n,))
        al = jnp.broadcast_to(al, (n,))
        for k in range(ngram):
            vh, vl = _add64(jnp.zeros((n,), jnp.uint32), tokens[k:k + n], add_h, add_l)
            ah, al = ah ^ vh, al ^ vl
            ah, al = _mul64(ah, al, mul_h, mul_l)
            ah, al = _add64(ah, al, inc_h, inc_l)
        counts = counts.at[_mod64(ah, al, dim)].add(1.0)
    return counts
