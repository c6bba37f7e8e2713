"""The custom-VJP matmuls in jaxmodels.layers.dense give the gradients of the plain einsum.

Shapes are prime and pairwise distinct, and cover both branches of `_canonical_weight_grad` (transpose the
input when it is the narrower operand, else the output gradient) and one or two leading axes.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels.layers.dense import matmul, matmul_t

# (leading shape, in features I, out features O): I < O, I > O and I == O.
SHAPES = [((13,), 5, 11), ((13,), 11, 5), ((3, 7), 17, 19), ((3, 7), 19, 17), ((2, 5), 7, 7)]


def _inputs(lead, i, o, *, transposed_w: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((*lead, i)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((o, i) if transposed_w else (i, o)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((*lead, o)), jnp.float32)  # a cotangent, so every entry counts
    return x, w, ct


def _assert_close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("lead,i,o", SHAPES)
def test_matmul_matches_einsum(lead, i, o, jit):
    x, w, ct = _inputs(lead, i, o, transposed_w=False)
    ours = lambda x, w: jnp.sum(matmul(x, w) * ct)  # noqa: E731
    plain = lambda x, w: jnp.sum(jnp.einsum("...i,io->...o", x, w) * ct)  # noqa: E731
    grad = jax.grad(ours, argnums=(0, 1))
    grad = jax.jit(grad) if jit else grad
    _assert_close(matmul(x, w), jnp.einsum("...i,io->...o", x, w))
    for got, want in zip(grad(x, w), jax.grad(plain, argnums=(0, 1))(x, w)):
        _assert_close(got, want)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("lead,i,o", SHAPES)
def test_matmul_t_matches_einsum(lead, i, o, jit):
    x, w, ct = _inputs(lead, i, o, transposed_w=True)
    ours = lambda x, w: jnp.sum(matmul_t(x, w) * ct)  # noqa: E731
    plain = lambda x, w: jnp.sum(jnp.einsum("...i,oi->...o", x, w) * ct)  # noqa: E731
    grad = jax.grad(ours, argnums=(0, 1))
    grad = jax.jit(grad) if jit else grad
    _assert_close(matmul_t(x, w), jnp.einsum("...i,oi->...o", x, w))
    for got, want in zip(grad(x, w), jax.grad(plain, argnums=(0, 1))(x, w)):
        _assert_close(got, want)


def test_bfloat16_gradients_keep_their_dtype():
    """bfloat16 inputs give bfloat16 gradients (the training step's compute dtype)."""
    x, w, ct = _inputs((3, 7), 19, 17, transposed_w=False)
    x, w, ct = (a.astype(jnp.bfloat16) for a in (x, w, ct))
    dx, dw = jax.grad(lambda x, w: jnp.sum((matmul(x, w) * ct).astype(jnp.float32)), argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    want = jax.grad(lambda x, w: jnp.sum((jnp.einsum("...i,io->...o", x, w) * ct).astype(jnp.float32)),
                    argnums=(0, 1))(x, w)
    for got, ref in zip((dx, dw), want):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the dot-form property concerns XLA:CPU")
@pytest.mark.parametrize("fn,transposed_w", [(matmul, False), (matmul_t, True)], ids=["matmul", "matmul_t"])
@pytest.mark.parametrize("i,o", [(64, 96), (96, 64)])
def test_weight_gradient_dots_keep_contracting_dim_last(fn, transposed_w, i, o):
    """In the compiled backward pass no 2-D dot contracts over the left operand's first dimension.

    That form is the slow path on XLA:CPU; a dropped barrier lets XLA fold a transpose back into the dot.
    """
    x, w, ct = _inputs((128,), i, o, transposed_w=transposed_w)
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w) * ct), argnums=(0, 1)))
    hlo = grad.lower(x, w).compile().as_text()
    dots = re.findall(r"= f32\[\d+,\d+\]\{[\d,]*\} dot\([^\n]*?lhs_contracting_dims=\{(\d)\}", hlo)
    assert dots, "no 2-D dot found in the compiled module"
    assert all(d == "1" for d in dots), f"a dot contracts over the lhs's first dimension: {dots}"
