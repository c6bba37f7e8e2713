"""The batched trace against the original's per-sample trace dictionaries, and explain()."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels.vvalt import VVALTModel, original_weights
from jaxmodels.vvalt import reference as ref
from tests.vvalt.helpers import TINY, inputs


def _assert_same(ours, theirs, path="trace"):
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), f"{path}: keys {list(ours)} != {list(theirs)}"
        for k in theirs:
            _assert_same(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, (list, tuple)) and theirs and isinstance(theirs[0], int):
        assert list(ours) == list(theirs), f"{path}: {ours} != {theirs}"
    elif isinstance(theirs, str) or (isinstance(theirs, tuple) and not theirs):
        assert ours == theirs, f"{path}: {ours} != {theirs}"
    elif isinstance(theirs, tuple):
        assert tuple(ours) == theirs, f"{path}: {ours} != {theirs}"
    else:
        np.testing.assert_allclose(np.asarray(ours, float), np.asarray(theirs, float), rtol=0, atol=1e-10,
                                   err_msg=path)


@pytest.fixture(scope="module")
def traced():
    x, t = inputs(TINY, batch=3, seed=4)
    out = VVALTModel(TINY, param_dtype=jnp.float64)(x, t, return_trace=True)
    return x, t, out


def test_every_field_of_the_original_trace_for_every_sample(traced):
    x, t, out = traced
    w = original_weights(TINY)
    assert out.trace.batch_size == 3
    for b in range(3):
        expected = ref.trace(x[b], ref.forward(w, x[b], t[b]))
        ours = out.trace.to_dict(b)
        extra = {k: ours.pop(k) for k in ("attention", "verification")}
        _assert_same(ours, expected)
        np.testing.assert_allclose(extra["attention"], np.asarray(out.attentions[0][b]), atol=0)
        assert extra["verification"] == {"input_nonfinite": 0, "task_nonfinite": 0, "output_nonfinite": 0,
                                         "sanitized": False}
        assert abs(sum(ours["task_weights"].values()) - 1.0) < 1e-12
        assert ours["encoded_frames"]["relational"]["statistics"]["norm_l2"] == pytest.approx(1.0, abs=1e-7)


def test_trace_arrays_are_batched(traced):
    _, _, out = traced
    assert out.trace.arrays["final_output"]["statistics"]["mean"].shape == (3,)
    assert out.trace.arrays["encoded_frames"]["semantic"]["samples"]["first_n"].shape == (3, 5)
    assert len(out.trace.to_list()) == 3
    with pytest.raises(IndexError, match="out of range for a batch of 3"):
        out.trace.to_dict(3)


def test_explain_text(traced):
    x, t, out = traced
    text = out.trace.explain(1)
    assert text.startswith("=== V.V.A.L.T Reasoning Trace ===")
    for piece in ("Task-Conditioned Frame Weights", "Frame Diversity", "Frame Attention", "Transformation",
                  "Final Output", "semantic"):
        assert piece in text
    everything = VVALTModel(TINY, param_dtype=jnp.float64).explain(x, t)
    assert everything.count("=== V.V.A.L.T Reasoning Trace ===") == 3


def test_nan_and_inf_inputs_are_sanitised_and_flagged():
    x, t = inputs(TINY, batch=3, seed=4)
    x[1, 4] = np.nan
    x[2, 0] = np.inf
    out = VVALTModel(TINY, param_dtype=jnp.float64)(x, t, return_trace=True)
    y = np.asarray(out.last_hidden_state)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[1], 0.0)  # NaN everywhere downstream -> 0, as the original's verifier
    assert list(np.asarray(out.sanitized)) == [False, True, True]
    check = out.trace.to_dict(1)["verification"]
    assert check["input_nonfinite"] == 1 and check["sanitized"] and check["output_nonfinite"] == TINY.frame_dim
    assert "WARNING: non-finite values" in out.trace.explain(1)
    assert out.trace.to_dict(0)["verification"]["sanitized"] is False


def test_safe_bounds_are_honoured():
    x, t = inputs(TINY, batch=2)
    x[0, 0] = np.nan
    tight = TINY.replace(safe_bounds=(-0.01, 0.02))
    y = np.asarray(VVALTModel(tight)(x, t).last_hidden_state)
    assert y.min() >= -0.01 and y.max() <= 0.02
    assert np.any(y[1] == 0.02) or np.any(y[1] == -0.01)  # the clip acts (the original ignored safe_bounds)


@pytest.mark.parametrize("n", [1, 2, 7, 12])
def test_median_equals_numpy(n):
    from jaxmodels.vvalt.trace import _median

    a = np.random.default_rng(n).standard_normal((3, 4, n)).astype(np.float32)
    a[0, 0, 0] = np.nan
    a[1, 1] = 0.5  # ties
    np.testing.assert_array_equal(np.asarray(jax.jit(_median)(a)), np.median(a, axis=-1))
