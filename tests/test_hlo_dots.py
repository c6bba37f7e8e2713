"""jaxmodels_benchmarks.hlo_dots finds a compiled module's dots (shapes, dimension numbers) and runs them alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels_benchmarks.hlo_dots import DotSpec, dot_specs, dots_only, torch_dots


def test_dots_of_a_compiled_module_are_found_and_rerun():
    def f(x, w, q, k):
        h = jnp.tanh(x @ w)  # [13, 7] @ [7, 11]
        s = jnp.einsum("bqh,bkh->bqk", q, k)  # batched, contracting the last dims
        return h.sum() + jnp.exp(s).sum()

    args = [jnp.ones((13, 7)), jnp.ones((7, 11)), jnp.ones((3, 5, 4)), jnp.ones((3, 6, 4))]
    specs = dot_specs(jax.jit(f).lower(*args).compile().as_text())
    assert len(specs) == 2
    by_rank = {len(s.lhs): s for s in specs}
    assert by_rank[2].lhs == (13, 7) and by_rank[2].rhs == (7, 11) and by_rank[2].flops == 2 * 13 * 7 * 11
    assert by_rank[3].batch == ((0,), (0,)) and by_rank[3].flops == 2 * 3 * 5 * 4 * 6
    run, operands = dots_only(specs)
    outs = run(operands)
    for (a, b), s, out in zip(operands, specs, outs):
        want = jax.lax.dot_general(np.asarray(a), np.asarray(b), (s.contracting, s.batch))
        np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-6)
    assert sum(s.flops for s in specs) == 2 * 13 * 7 * 11 + 2 * 3 * 5 * 4 * 6


def test_torch_runs_the_same_products():
    pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")
    specs = [DotSpec((13, 7), (7, 11), ((1,), (0,)), ((), ())),  # x @ w
             DotSpec((7, 13), (7, 11), ((0,), (0,)), ((), ())),  # x^T @ w
             DotSpec((13, 7), (11, 7), ((1,), (1,)), ((), ())),  # x @ w^T
             DotSpec((3, 5, 4), (3, 6, 4), ((2,), (2,)), ((0,), (0,))),  # batched q k^T
             DotSpec((5, 3, 4), (6, 4, 3), ((1, 2), (2, 1)), ((), ()))]  # two contracting dims
    assert [s.einsum for s in specs] == ["ab,bo->ao", "ab,ao->bo", "ab,nb->an", "abc,aoc->abo", "abc,ncb->an"]
    run, operands = torch_dots(specs)
    for (a, b), s, out in zip(operands, specs, run(operands)):
        want = jax.lax.dot_general(a.numpy(), b.numpy(), (s.contracting, s.batch))
        assert tuple(out.shape) == want.shape
        np.testing.assert_allclose(out.numpy(), np.asarray(want), rtol=1e-5, atol=1e-5)
