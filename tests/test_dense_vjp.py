"""The layers' custom VJPs give the gradients JAX's autodiff gives for the plain formulation.

The matmuls of jaxmodels.layers.dense, with and without bias (shapes prime and pairwise distinct, covering both branches of
`_weight_grads`: transpose the input when it is the narrower operand, else the output gradient),
the attention core (MHA, GQA, padding, dropout) and SwiGLU. The compiled backward passes must also keep
every dot in the form XLA:CPU runs fast (contracting over the left operand's last dimension).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels.layers.attention_core import attention_core, reference_attention
from jaxmodels.layers.dense import affine, matmul, matmul_t, projections
from jaxmodels.layers.linear import Linear, fused_linear
from jaxmodels.layers.mlp import swiglu

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


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("lead,i,o", SHAPES)
def test_affine_matches_einsum(lead, i, o, jit):
    x, w, ct = _inputs(lead, i, o, transposed_w=False)
    b = jnp.asarray(np.random.default_rng(3).standard_normal(o), jnp.float32)
    ours = lambda x, w, b: jnp.sum(affine(x, w, b) * ct)  # noqa: E731
    plain = lambda x, w, b: jnp.sum((jnp.einsum("...i,io->...o", x, w) + b) * ct)  # noqa: E731
    grad = jax.grad(ours, argnums=(0, 1, 2))
    grad = jax.jit(grad) if jit else grad
    _assert_close(affine(x, w, b), jnp.einsum("...i,io->...o", x, w) + b)
    for got, want in zip(grad(x, w, b), jax.grad(plain, argnums=(0, 1, 2))(x, w, b)):
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


def _dot_types(fn, *args) -> list[tuple[str, str, str]]:
    """(lhs, rhs, preferred) dtypes of every dot_general in fn's jaxpr (nested ones too)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                a, b = (str(v.aval.dtype) for v in eqn.invars)
                found.append((a, b, str(eqn.params["preferred_element_type"])))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_bfloat16_dots_accumulate_in_float32():
    """Forward and backward dots of bfloat16 operands accumulate in float32 and round once: the forward equals
    the float32-accumulated product rounded to bfloat16, bit for bit."""
    x, w, ct = (a.astype(jnp.bfloat16) for a in _inputs((3, 7), 19, 17, transposed_w=False))
    b = jnp.asarray(np.random.default_rng(5).standard_normal(17), jnp.bfloat16)
    wide = lambda eq, a, c: jnp.einsum(eq, a, c, preferred_element_type=jnp.float32)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(matmul(x, w)),
                                  np.asarray(wide("...i,io->...o", x, w).astype(jnp.bfloat16)))
    np.testing.assert_array_equal(np.asarray(affine(x, w, b)),
                                  np.asarray((wide("...i,io->...o", x, w) + b).astype(jnp.bfloat16)))
    np.testing.assert_array_equal(np.asarray(matmul_t(x, w.T)),
                                  np.asarray(wide("...i,oi->...o", x, w.T).astype(jnp.bfloat16)))
    assert affine(x, w, b).dtype == matmul_t(x, w.T).dtype == jnp.bfloat16
    losses = {"affine": (lambda x, w, b: jnp.sum((affine(x, w, b) * ct).astype(jnp.float32)), (x, w, b)),
              "matmul_t": (lambda x, w: jnp.sum((matmul_t(x, w) * ct).astype(jnp.float32)), (x, w.T))}
    for name, (loss, args) in losses.items():
        dots = _dot_types(jax.grad(loss, argnums=tuple(range(len(args)))), *args)
        assert len(dots) == 3, (name, dots)  # the forward, dx and dw
        assert all(d == ("bfloat16", "bfloat16", "float32") for d in dots), (name, dots)


def _lhs_contracting_dims_of_2d_dots(hlo: str) -> list[str]:
    """The left operand's contracting dimension of every 2-D float32 dot in a compiled module."""
    return re.findall(r"= f32\[\d+,\d+\]\{[\d,]*\} dot\([^\n]*?lhs_contracting_dims=\{(\d)\}", hlo)


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
    dots = _lhs_contracting_dims_of_2d_dots(hlo)
    assert dots, "no 2-D dot found in the compiled module"
    assert all(d == "1" for d in dots), f"a dot contracts over the lhs's first dimension: {dots}"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the dot-form property concerns XLA:CPU")
def test_projections_backward_dots_keep_contracting_dim_last():
    """The same property for `projections`, with outputs wider and narrower than the input."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((128, 64)), jnp.float32)
    kernels = tuple(jnp.asarray(rng.standard_normal((64, o)), jnp.float32) for o in (96, 32))
    cts = [jnp.asarray(rng.standard_normal((128, o)), jnp.float32) for o in (96, 32)]
    loss = lambda x, ks: sum(jnp.sum(y * c) for y, c in zip(projections(x, ks, (None, None)), cts))  # noqa: E731
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernels).compile().as_text()
    dots = _lhs_contracting_dims_of_2d_dots(hlo)
    assert len(dots) >= 4, f"expected the forward and backward dots in the compiled module, found {dots}"
    assert all(d == "1" for d in dots), f"a dot contracts over the lhs's first dimension: {dots}"

# (B, T, S, N query heads, K key/value heads, H): MHA, GQA, one kv head, a cache longer than the queries.
ATTENTION_SHAPES = [(2, 13, 13, 4, 4, 6), (2, 7, 7, 6, 2, 8), (1, 11, 11, 3, 1, 4), (3, 5, 17, 6, 3, 10)]


def _attention_inputs(b, t, s, n, kv_heads, h, *, dropout: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = n // kv_heads
    q = jnp.asarray(rng.standard_normal((b, kv_heads, g * t, h)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, kv_heads, s, h)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, kv_heads, s, h)), jnp.float32)
    mask = np.tril(np.ones((t, s), bool), k=s - t)[None].repeat(b, axis=0)
    mask[0, :, :3] = False  # padded keys: the first queries of row 0 attend to nothing at all
    keep_scale = None
    if dropout:
        keep_scale = jnp.asarray(np.where(rng.random((b, kv_heads, g, t, s)) < 0.7, 1 / 0.7, 0.0), jnp.float32)
    ct = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)
    return q, k, v, jnp.asarray(mask), keep_scale, ct


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES)
def test_attention_core_matches_reference(shape, dropout):
    q, k, v, mask, keep_scale, ct = _attention_inputs(*shape, dropout=dropout)
    out = attention_core(q, k, v, mask, keep_scale)
    assert not np.isnan(np.asarray(out)).any()
    _assert_close(out, reference_attention(q, k, v, mask, keep_scale))
    ours = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attention_core(q, k, v, mask, keep_scale) * ct), argnums=(0, 1, 2)))
    plain = jax.grad(lambda q, k, v: jnp.sum(reference_attention(q, k, v, mask, keep_scale) * ct), argnums=(0, 1, 2))
    for got, want in zip(ours(q, k, v), plain(q, k, v)):
        _assert_close(got, want)


def test_attention_core_backward_dots_keep_contracting_dim_last():
    q, k, v, mask, _, ct = _attention_inputs(2, 64, 64, 4, 2, 16, dropout=False)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attention_core(q, k, v, mask) * ct), argnums=(0, 1, 2)))
    hlo = grad.lower(q, k, v).compile().as_text()
    dims = re.findall(r"dot\([^\n]*?lhs_batch_dims=\{0,1\}, lhs_contracting_dims=\{(\d)\}", hlo)
    assert dims and all(d == "3" for d in dims), f"batched dots contracting elsewhere than the lhs's last dim: {dims}"


@pytest.mark.parametrize("shape", [(13, 11), (3, 7, 19)])
def test_swiglu_matches_autodiff(shape):
    rng = np.random.default_rng(0)
    gate, up = (jnp.asarray(3 * rng.standard_normal(shape), jnp.float32) for _ in range(2))
    ct = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def plain(g, u):
        return jax.nn.silu(g) * u

    _assert_close(swiglu(gate, up), plain(gate, up))
    grads = [jax.grad(lambda g, u, f=f: jnp.sum(f(g, u) * ct), argnums=(0, 1))(gate, up) for f in (swiglu, plain)]
    for got, want in zip(*grads):
        _assert_close(got, want)


# (leading shape, in features, out features per projection, which have a bias): outputs wider and narrower
# than the input (both weight-gradient branches), a projection without bias beside ones with.
PROJECTIONS = [((13,), 7, (11, 17), (True, True)), ((3, 5), 19, (5, 23, 5), (False, True, False)),
               ((2, 3), 11, (11,), (True,))]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("lead,i,outs,bias", PROJECTIONS)
def test_projections_match_autodiff(lead, i, outs, bias, jit):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((*lead, i)), jnp.float32)
    kernels = tuple(jnp.asarray(rng.standard_normal((i, o)), jnp.float32) for o in outs)
    biases = tuple(jnp.asarray(rng.standard_normal(o), jnp.float32) if b else None for o, b in zip(outs, bias))
    cts = [jnp.asarray(rng.standard_normal((*lead, o)), jnp.float32) for o in outs]

    def plain(x, kernels, biases):
        return tuple(x @ w + (0.0 if b is None else b) for w, b in zip(kernels, biases))

    def objective(f):
        return lambda x, kernels, biases: sum(jnp.sum(y * ct) for y, ct in zip(f(x, kernels, biases), cts))

    for got, want in zip(projections(x, kernels, biases), plain(x, kernels, biases)):
        _assert_close(got, want)
    grad = jax.grad(objective(projections), argnums=(0, 1, 2))
    got = (jax.jit(grad) if jit else grad)(x, kernels, biases)
    want = jax.grad(objective(plain), argnums=(0, 1, 2))(x, kernels, biases)
    assert jax.tree.structure(got) == jax.tree.structure(want)  # no bias gradient where there is no bias
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _assert_close(g, w)


def test_fused_linear_matches_separate_projections():
    rng = nnx.Rngs(0)
    q, k = Linear(13, (3, 5), use_bias=True, rngs=rng), Linear(13, (2, 5), rngs=rng)
    q.bias[...] = jnp.asarray(np.random.default_rng(1).standard_normal((3, 5)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 7, 13)), jnp.float32)
    yq, yk = fused_linear(x, [q, k])
    assert yq.shape == (3, 7, 3, 5) and yk.shape == (3, 7, 2, 5)
    _assert_close(yq, q(x))
    _assert_close(yk, k(x))
    with pytest.raises(ValueError, match="one input shape"):
        fused_linear(x, [q, Linear(11, 5, rngs=rng)])
