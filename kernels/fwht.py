"""Fast Walsh-Hadamard transform in natural (Sylvester) order, unnormalised.

One stage with half-width h maps each pair (a, b) = (x[i + j], x[i + j + h]) to (a + b, a - b); stages run
h = 1, 2, 4, ..., P / 2. Three versions, one meaning:

- `reference_fwht`: plain NumPy, one vectorised pass per stage (the baseline and the test oracle);
- `fwht_host`: numba, parallel over rows and cache-blocked: every stage whose pairs fit inside a block of
  `_BLOCK` elements runs block by block while the block sits in L1, and the remaining stages run two at a time
  (radix 4), so a row of P = 2^16 is streamed ceil((16 - 11) / 2) = 3 times instead of 16;
- `fwht_jax`: jittable, a reshape butterfly with the first stages done as one small matmul by H_16.

`fwht(x)` picks the host or the device version from the type of x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numba
import numpy as np

import jaxmodels_kernels.numba_config  # noqa: F401  (threading layer before the first parallel kernel)

_BLOCK = 2048  # elements per cache block: 8 KiB of float32, well inside a 32 KiB L1 data cache


def check_power_of_two(n: int, what: str) -> int:
    """Returns log2(n), or raises ValueError naming `what` when n is not a positive power of two."""
    if n < 1 or (n & (n - 1)) != 0:
        raise ValueError(f"{what} is {n}, which is not a power of two; expected P = 2^k (pad with zeros first)")
    return n.bit_length() - 1


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    if n < 1:
        raise ValueError(f"next_pow2 needs a positive size, got {n}")
    return 1 << (n - 1).bit_length()


def hadamard(p: int, dtype=np.float32) -> np.ndarray:
    """The Sylvester Hadamard matrix H_P of shape [P, P] (entries +-1), built by Kronecker products."""
    check_power_of_two(p, "hadamard size P")
    h = np.ones((1, 1), dtype=dtype)
    h2 = np.array([[1, 1], [1, -1]], dtype=dtype)
    while h.shape[0] < p:
        h = np.kron(h2, h)
    return h


def reference_fwht(x: np.ndarray) -> np.ndarray:
    """Plain NumPy FWHT over the last axis; x of shape [..., P] -> same shape, float32 unless float64."""
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    p = x.shape[-1]
    check_power_of_two(p, "fwht: last dimension")
    lead = x.shape[:-1]
    y = x.astype(dtype, copy=True).reshape(-1, p)
    h = 1
    while h < p:
        v = y.reshape(-1, p // (2 * h), 2, h)  # [rows, pairs of blocks, 2, h]
        a = v[:, :, 0, :].copy()
        v[:, :, 0, :] += v[:, :, 1, :]
        v[:, :, 1, :] = a - v[:, :, 1, :]
        h *= 2
    return y.reshape(*lead, p)


@numba.njit(inline="always")
def _stages(row, start, length, h, h_end):
    """Applies stages h, 2h, ... < h_end to row[start:start + length], two stages per sweep when it can.

    The butterflies read and write through slice views indexed from 0: with `row[j + h]` on the whole row, numba
    guards every signed index against wraparound and LLVM leaves the loop scalar; over views the inner loops
    compile to AVX vectors (measured 14x faster per stage at h = 64).
    """
    while h < h_end:
        if 2 * h < h_end:
            for i0 in range(start, start + length, 4 * h):
                a = row[i0:i0 + h]
                b = row[i0 + h:i0 + 2 * h]
                c = row[i0 + 2 * h:i0 + 3 * h]
                d = row[i0 + 3 * h:i0 + 4 * h]
                for j in range(h):
                    s0 = a[j] + b[j]
                    s1 = a[j] - b[j]
                    s2 = c[j] + d[j]
                    s3 = c[j] - d[j]
                    a[j] = s0 + s2
                    b[j] = s1 + s3
                    c[j] = s0 - s2
                    d[j] = s1 - s3
            h *= 4
        else:
            for i0 in range(start, start + length, 2 * h):
                a = row[i0:i0 + h]
                b = row[i0 + h:i0 + 2 * h]
                for j in range(h):
                    u = a[j]
                    v = b[j]
                    a[j] = u + v
                    b[j] = u - v
            h *= 2


@numba.njit(inline="always")
def _wht8(row, start, length):
    """Stages h = 1, 2, 4 on every group of 8 in row[start:start + length], kept in registers."""
    for i in range(start, start + length, 8):
        x0 = row[i]
        x1 = row[i + 1]
        x2 = row[i + 2]
        x3 = row[i + 3]
        x4 = row[i + 4]
        x5 = row[i + 5]
        x6 = row[i + 6]
        x7 = row[i + 7]
        a0 = x0 + x1
        a1 = x0 - x1
        a2 = x2 + x3
        a3 = x2 - x3
        a4 = x4 + x5
        a5 = x4 - x5
        a6 = x6 + x7
        a7 = x6 - x7
        b0 = a0 + a2
        b1 = a1 + a3
        b2 = a0 - a2
        b3 = a1 - a3
        b4 = a4 + a6
        b5 = a5 + a7
        b6 = a4 - a6
        b7 = a5 - a7
        row[i] = b0 + b4
        row[i + 1] = b1 + b5
        row[i + 2] = b2 + b6
        row[i + 3] = b3 + b7
        row[i + 4] = b0 - b4
        row[i + 5] = b1 - b5
        row[i + 6] = b2 - b6
        row[i + 7] = b3 - b7


@numba.njit(parallel=True, cache=True)
def _fwht_rows_inplace(x):
    """In-place FWHT of every row of x of shape [B, P] (C-contiguous), rows in parallel."""
    n_rows, p = x.shape
    block = min(p, _BLOCK)
    for r in numba.prange(n_rows):
        row = x[r]
        if p < 8:
            _stages(row, 0, p, 1, p)
            continue
        for start in range(0, p, block):
            _wht8(row, start, block)
            _stages(row, start, block, 8, block)
        _stages(row, 0, p, block, p)


def fwht_host(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """numba FWHT over the last axis; x of shape [..., P] (NumPy), float32 unless float64.

    With inplace=True a C-contiguous float32/float64 x is overwritten and returned (no copy, no allocation).
    """
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    p = x.shape[-1]
    check_power_of_two(p, "fwht: last dimension")
    if inplace and (x.dtype != dtype or not x.flags.c_contiguous or not x.flags.writeable):
        raise ValueError(f"fwht_host(inplace=True) needs a writeable C-contiguous float32/float64 array, "
                         f"got dtype {x.dtype}, contiguous={x.flags.c_contiguous}, writeable={x.flags.writeable}")
    y = x.reshape(-1, p) if inplace else np.array(x, dtype=dtype, order="C", copy=True).reshape(-1, p)
    if y.shape[0] and p > 1:
        _fwht_rows_inplace(y)
    return y.reshape(x.shape)


_H16 = hadamard(16)


def fwht_jax(x: jax.Array) -> jax.Array:
    """Jittable FWHT over the last axis; x of shape [..., P] -> same shape and dtype.

    Stages h = 1..8 are one matmul by H_16 on [..., P / 16, 16] (natural order is H_P = H_{P/16} (x) H_16,
    so the low four bits of the index are transformed by H_16); the remaining stages are reshape butterflies.
    """
    x = jnp.asarray(x)
    p = x.shape[-1]
    check_power_of_two(p, "fwht: last dimension")
    lead = x.shape[:-1]
    low = min(p, 16)
    y = x.reshape(*lead, p // low, low)
    y = jnp.einsum("...ij,jk->...ik", y, jnp.asarray(_H16[:low, :low] if low == 16 else hadamard(low), x.dtype),
                   precision=jax.lax.Precision.HIGHEST)
    y = y.reshape(*lead, p)
    h = low
    while h < p:
        v = y.reshape(*lead, p // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        y = jnp.stack([a + b, a - b], axis=-2).reshape(*lead, p)
        h *= 2
    return y


def fwht(x):
    """FWHT over the last axis: the JAX version for jax arrays (and tracers), the numba one otherwise."""
    if isinstance(x, jax.Array):
        return fwht_jax(x)
    return fwht_host(x)
