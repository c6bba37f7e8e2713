"""Every fast kernel against its plain reference (max and mean error), plus the original's feature-op checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels_kernels.countsketch import apply_count_sketch, make_count_sketch, reference_count_sketch
from jaxmodels_kernels.fwht import fwht, fwht_host, fwht_jax, hadamard, next_pow2, reference_fwht
from jaxmodels_kernels.hashing import (hashed_ngram_features, hashed_ngram_features_jax, reference_hashed_ngram_features,
                             stable_hash)
from jaxmodels_kernels.projection import ProjectionStack, block_rmsnorm
from jaxmodels_kernels.srht import apply_block_srht, make_block_srht, reference_block_srht


def close(a, b, max_tol, mean_tol):
    err = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    assert err.max() <= max_tol and err.mean() <= mean_tol, (err.max(), err.mean())


@pytest.mark.parametrize("p", [1, 2, 8, 16, 64, 4096])
def test_fwht_versions_match_dense_hadamard(p):
    x = np.random.default_rng(p).standard_normal((3, p)).astype(np.float32)
    dense = x.astype(np.float64) @ hadamard(p, np.float64).T
    close(reference_fwht(x), dense, 1e-3, 1e-4)
    close(fwht_host(x), dense, 1e-3, 1e-4)
    close(jax.jit(fwht_jax)(x), dense, 1e-3, 1e-4)
    assert isinstance(fwht(jnp.asarray(x)), jax.Array) and isinstance(fwht(x), np.ndarray)


def test_fwht_host_inplace_and_large_rows():
    x = np.random.default_rng(0).standard_normal((2, 1 << 13)).astype(np.float32)
    want = reference_fwht(x)
    y = x.copy()
    assert fwht_host(y, inplace=True) is not None
    close(y, want, 1e-3, 1e-5)
    with pytest.raises(ValueError, match="writeable C-contiguous float32/float64"):
        fwht_host(x[:, ::2], inplace=True)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="fwht: last dimension is 12, which is not a power of two"):
        fwht_host(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="not a power of two"):
        fwht_jax(jnp.zeros(12))
    assert [next_pow2(n) for n in (1, 2, 3, 17, 64)] == [1, 2, 4, 32, 64]


def test_srht_host_and_device_match_reference():
    params = make_block_srht(37, 97, 13, seed=3)  # P = 64, two tiles, a short last RMS block
    assert (params.padded_dim, params.tile_count) == (64, 2)
    x = np.random.default_rng(1).standard_normal((5, 37)).astype(np.float32)
    want = reference_block_srht(x, params)
    close(apply_block_srht(x, params), want, 1e-4, 1e-5)
    close(apply_block_srht(jnp.asarray(x), params), want, 1e-4, 1e-5)


def test_srht_rms_one_per_block_and_seeded():
    params = make_block_srht(100, 256, 64, seed=0)
    y = apply_block_srht(np.random.default_rng(0).standard_normal((4, 100)), params)
    rms = np.sqrt((y.reshape(4, 4, 64) ** 2).mean(-1))
    np.testing.assert_allclose(rms, 1.0, atol=1e-4)
    again = make_block_srht(100, 256, 64, seed=0)
    assert np.array_equal(params.signs, again.signs) and np.array_equal(params.permutation, again.permutation)
    with pytest.raises(ValueError, match=r"must end in input_dim 100 \(shape \[\.\.\., 100\]\)"):
        apply_block_srht(np.zeros((2, 99)), params)
    with pytest.raises(TypeError, match="seed must be an int or a numpy.random.Generator"):
        make_block_srht(10, 10, seed=None)


def test_block_rmsnorm_disabled_and_blocks():
    x = np.random.default_rng(0).standard_normal((2, 10)) * 3
    np.testing.assert_array_equal(block_rmsnorm(x, 0), x.astype(np.float64))
    y = block_rmsnorm(x.astype(np.float32), 4)
    for s in (slice(0, 4), slice(4, 8), slice(8, 10)):
        np.testing.assert_allclose(np.sqrt((y[:, s] ** 2).mean(-1)), 1.0, atol=1e-5)
    close(block_rmsnorm(jnp.asarray(x, jnp.float32), 4), y, 1e-5, 1e-6)


def test_count_sketch_host_and_device_match_dense():
    params = make_count_sketch(53, 19, seed=2)
    x = np.random.default_rng(2).standard_normal((7, 53)).astype(np.float32)
    want = reference_count_sketch(x, params)
    close(apply_count_sketch(x, params), want, 1e-5, 1e-6)
    close(apply_count_sketch(jnp.asarray(x), params), want, 1e-5, 1e-6)
    assert apply_count_sketch(x, params).shape == (7, 19)
    with pytest.raises(ValueError, match="must end in input_dim 53"):
        apply_count_sketch(x[:, :50], params)


def test_stable_hash_and_ngrams():
    assert stable_hash([], 0) == 0x9E3779B185EBCA87
    expected = ((0x9E3779B185EBCA87 ^ (5 + 0x9E3779B1)) * 0xC2B2AE3D27D4EB4F + 0x165667B19E3779F9) % 2**64
    assert stable_hash([5], 0) == expected
    tokens = np.random.default_rng(0).integers(0, 50000, size=23)
    ref = reference_hashed_ngram_features(tokens, 97, 2, 2, 7)
    np.testing.assert_array_equal(hashed_ngram_features(tokens, 97, 2, 2, 7), ref)
    np.testing.assert_array_equal(np.asarray(hashed_ngram_features_jax(jnp.asarray(tokens), 97, 2, 2, 7)), ref)
    assert ref.sum() == (len(tokens) - 1) * 2  # the original's check
    with pytest.raises(ValueError, match="tokens must have shape"):
        hashed_ngram_features(np.zeros((2, 2), int), 8)


def test_projection_stack_full():
    cs = make_count_sketch(29 + 3, 41, seed=0)
    stack = ProjectionStack(29, (make_block_srht(41, 32, 16, seed=1), make_block_srht(41, 24, 8, seed=2)),
                            countsketch=cs, output_dtype=np.float16)
    x = np.random.default_rng(0).standard_normal((4, 29)).astype(np.float32)
    extra = np.ones((4, 3), np.float32)
    y = stack.project(x, extra)
    assert y.shape == (4, 56) and y.dtype == np.float16 and stack.output_dim == 56
    close(stack.project_jax(jnp.asarray(x), jnp.asarray(extra)).astype(np.float32), y.astype(np.float32), 2e-2, 2e-3)
    again = ProjectionStack.from_arrays(stack.to_dict(), output_dtype=np.float16)
    np.testing.assert_array_equal(again.project(x, extra), y)
    with pytest.raises(ValueError, match="extra features need a CountSketch stage"):
        ProjectionStack(41, (make_block_srht(41, 8, 8, seed=0),)).project(np.zeros((1, 41)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="SRHT 0 has input_dim 40, expected 41"):
        ProjectionStack(29, (make_block_srht(40, 8, 8, seed=0),), countsketch=cs)
