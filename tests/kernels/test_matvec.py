"""The decode kernels (matvec.cc) against a float64 product, on shapes that exercise every tail, and the
layers that route decode steps to them. int8 weights with either kind of scale: per output channel and Q8_0's
float16 blocks of 32 along K."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels_kernels import matvec

pytestmark = pytest.mark.skipif(not matvec.available(), reason="the decode kernels need the CPU and a C++ compiler")

# (M, K, N): one row and one full register tile of rows; K and N that are and are not multiples of the 32-wide
# tile and of the 32-row block; enough rows of K (>= 256) that the K split among threads happens.
SHAPES = [(1, 64, 96), (8, 576, 192), (3, 24, 17), (5, 37, 130), (9, 1536, 64), (16, 300, 33)]


# Q8_0 blocks need K a multiple of 32: one row, a full register tile, N tails, and a K split among threads.
BLOCK_SHAPES = [(1, 64, 96), (8, 576, 192), (3, 96, 17), (9, 1536, 64), (16, 320, 33)]


def _weight(rng, layout, k, n, dtype):
    """A weight in `layout` and `dtype` with its scale: none, [n] per output channel ("int8"), or float16
    blocks [K/32, N] / [N, K/32] ("int8-blocks")."""
    shape = (k, n) if layout == "kn" else (n, k)
    w = rng.standard_normal(shape).astype(np.float32)
    if dtype == "int8":
        q = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
        return jnp.asarray(q), jnp.asarray(rng.uniform(0.5, 2.0, n).astype(np.float32))
    if dtype == "int8-blocks":
        q = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
        blocks = (k // matvec.BLOCK, n) if layout == "kn" else (n, k // matvec.BLOCK)
        return jnp.asarray(q), jnp.asarray(rng.uniform(1e-3, 2.0, blocks).astype(np.float16))
    return jnp.asarray(w).astype(dtype), None


def _check(layout, dtype, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w, scale = _weight(rng, layout, k, n, dtype)
    fn = matvec.matvec_kn if layout == "kn" else matvec.matvec_nk
    y = np.asarray(jax.jit(fn)(jnp.asarray(x), w, scale))
    ref = matvec.reference_matvec(x, w, scale, layout=layout)
    assert y.shape == (m, n) and y.dtype == np.float32
    # float32 accumulation of K products: a few ulps of the sum of |terms| per output
    bound = matvec.reference_matvec(np.abs(x), jnp.abs(w.astype(jnp.float32)).astype(w.dtype), scale, layout=layout)
    assert np.all(np.abs(y - ref) <= 4e-7 * np.sqrt(k) * bound + 1e-30)


@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matvec_matches_float64(layout, dtype, m, k, n):
    _check(layout, dtype, m, k, n)


@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("m,k,n", BLOCK_SHAPES)
def test_matvec_with_q8_0_block_scales_matches_float64(layout, m, k, n):
    _check(layout, "int8-blocks", m, k, n)


def test_matvec_under_vmap_and_in_a_larger_graph():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 2, 40)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((40, 24)).astype(np.float32))
    y = jax.jit(jax.vmap(lambda a: jnp.tanh(matvec.matvec_kn(a, w))))(x)
    np.testing.assert_allclose(np.asarray(y), np.tanh(np.asarray(x) @ np.asarray(w)), rtol=1e-5, atol=1e-6)


def test_matvec_errors():
    x = jnp.ones((2, 8), jnp.float32)
    with pytest.raises(TypeError, match="weights of dtype float16 are not supported; expected one of float32"):
        matvec.matvec_kn(x, jnp.ones((8, 4), jnp.float16))
    with pytest.raises(ValueError, match="int8 weights need a scale and other weights take none"):
        matvec.matvec_kn(x, jnp.ones((8, 4), jnp.int8))
    with pytest.raises(ValueError, match="int8 weights need a scale"):
        matvec.matvec_nk(x, jnp.ones((4, 8), jnp.float32), jnp.ones(4))
    with pytest.raises(ValueError, match=r"expected x \[M, K\] and a 2-D w, got \(2, 8\) and \(8,\)"):
        matvec.matvec_kn(x, jnp.ones((8,), jnp.float32))
    with pytest.raises(Exception, match=r"matvec kn: expected x \[M, K\] and w \[K, N\]"):
        jax.block_until_ready(matvec.matvec_kn(x, jnp.ones((7, 4), jnp.float32)))
    q = jnp.ones((64, 4), jnp.int8)
    with pytest.raises(ValueError, match=r"a scale per output channel has shape \(4,\), got \(5,\)"):
        matvec.matvec_kn(x, q, jnp.ones(5))
    with pytest.raises(ValueError, match=r"block scales of w \(64, 4\) have shape \[K/32, N\] with K a multiple"):
        matvec.matvec_kn(x, q, jnp.ones((4, 2), jnp.float16))
    with pytest.raises(ValueError, match=r"block scales of w \(4, 40\) have shape \[N, K/32\]"):
        matvec.matvec_nk(x, jnp.ones((4, 40), jnp.int8), jnp.ones((4, 1), jnp.float16))
    with pytest.raises(TypeError, match="block scales are float16 \\(Q8_0's\\), got float32"):
        matvec.matvec_kn(x, q, jnp.ones((2, 4), jnp.float32))
    with pytest.raises(Exception, match=r"matvec kn: expected x \[M, K\] and w \[K, N\]"):
        jax.block_until_ready(matvec.matvec_kn(jnp.ones((2, 32)), q, jnp.ones((2, 4), jnp.float16)))


def test_off_switch(monkeypatch):
    monkeypatch.setenv(matvec.ENV_VAR, "off")
    assert not matvec.available()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layers_route_decode_steps_to_the_kernels_and_keep_their_gradients(dtype):
    from jaxmodels.layers import linear, skinny

    lin = linear.Linear(12, (3, 5), use_bias=True, param_dtype=dtype, rngs=nnx.Rngs(0))
    lin.bias[...] = jnp.arange(15, dtype=dtype).reshape(3, 5) / 10
    emb = linear.Embed(40, 15, param_dtype=dtype, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (2, 1, 12), jnp.float32)

    def loss(lin, emb, x, layers):
        h = lin(x, layers=layers).reshape(2, 1, 15)
        return jnp.sum(jnp.sin(emb.decode(h, layers=layers)))

    jaxpr = str(jax.make_jaxpr(lambda x: loss(lin, emb, x, "tuned"))(x))
    assert "jm_matvec_kn" in jaxpr and "jm_matvec_nk" in jaxpr
    assert skinny.applies(jnp.zeros((4, 4, 12))) and not skinny.applies(jnp.zeros((4, 5, 12)))
    grad = jax.grad(loss, argnums=(0, 1, 2))
    tuned, plain = grad(lin, emb, x, "tuned"), grad(lin, emb, x, "plain")
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(loss(lin, emb, x, "tuned"), loss(lin, emb, x, "plain"), rtol=tol, atol=tol)
    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(plain)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)
