"""The Flax model against the plain NumPy reference of the original: weights, outputs, frames, attention."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels.vvalt import VVALTConfig, VVALTModel, original_weights
from jaxmodels.vvalt import reference as ref
from tests.vvalt.helpers import TINY, WIDE, adjacency, inputs, perturbed


def _ref_weights(c: VVALTConfig):
    return ref.reference_weights(c.input_dim, c.frame_dim, c.task_dim, c.hidden_dim, c.seed)


def _load(model: VVALTModel, weights: dict[str, np.ndarray]) -> VVALTModel:
    dtype = model.encoder.W_semantic[...].dtype
    with jax.enable_x64(dtype == jnp.float64):
        state = nnx.state(model, nnx.Param)
        flat = [(path, var.replace(jnp.asarray(weights[".".join(map(str, path))], dtype)))
                for path, var in nnx.to_flat_state(state)]
        nnx.update(model, nnx.from_flat_state(flat))
    return model


@pytest.mark.parametrize("config", [TINY, WIDE, TINY.replace(seed=123)], ids=["tiny", "input<frame", "seed123"])
def test_init_is_the_originals_bit_for_bit(config):
    ours, theirs = original_weights(config), _ref_weights(config)
    assert set(ours) == set(theirs)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    # the original's correlation, a fingerprint of the per-component reseeding
    np.testing.assert_allclose(ours["projector.W_topology"] - np.eye(config.frame_dim),
                               0.1 * ours["attention.W_query"], rtol=0, atol=1e-15)


def test_building_a_model_leaves_the_global_numpy_rng_alone():
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    VVALTModel(TINY)
    np.testing.assert_array_equal(np.random.rand(3), expected)


CASES = [("plain", None, True), ("graph-original", "shared", False), ("graph-propagate", "shared", True),
         ("graph-per-sample", "batch", True)]


@pytest.mark.parametrize("name,adj_kind,propagate", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)], ids=["f64", "f32"])
def test_outputs_match_reference(name, adj_kind, propagate, dtype, tol):
    config = TINY.replace(graph_propagation=propagate)
    x, t = inputs(config, batch=6)
    adj = None if adj_kind is None else adjacency(config.frame_dim, batch=6 if adj_kind == "batch" else None)
    w = perturbed(_ref_weights(config))
    model = _load(VVALTModel(config, param_dtype=dtype), w)
    out = model(x.astype(dtype), t.astype(dtype), adj)
    for b in range(6):
        a = None if adj is None else (adj[b] if adj.ndim == 3 else adj)
        r = ref.forward(w, x[b], t[b], a, graph_propagation=propagate)
        np.testing.assert_allclose(np.asarray(out.last_hidden_state[b]), r["final_output"], rtol=0, atol=tol)
        np.testing.assert_allclose(np.asarray(out.attentions[0][b]), r["attention"], rtol=0, atol=tol)
        for k, frames in enumerate(("frames", "weighted_frames", "aligned_frames")):
            np.testing.assert_allclose(np.asarray(out.hidden_states[k][b]),
                                       np.stack([r[frames][n] for n in ref.NAMES]), rtol=0, atol=tol, err_msg=frames)


@pytest.mark.parametrize("config", [TINY, WIDE], ids=["tiny", "input<frame"])
def test_seeded_model_matches_the_original_procedure_float64(config):
    x, t = inputs(config, batch=4, scale=3.0)
    out = VVALTModel(config, param_dtype=jnp.float64)(x, t)
    expected = ref.batch_forward(_ref_weights(config), x, t)
    assert out.last_hidden_state.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), expected, rtol=0, atol=1e-10)


def test_batched_equals_per_sample():
    x, t = inputs(TINY, batch=7)
    adj = adjacency(TINY.frame_dim)
    model = VVALTModel(TINY, param_dtype=jnp.float64)
    batched = np.asarray(model(x, t, adj).last_hidden_state)
    single = np.concatenate([np.asarray(model(x[i:i + 1], t[i:i + 1], adj).last_hidden_state) for i in range(7)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-14)


def test_same_seed_same_bits_and_bounded():
    x, t = inputs(TINY, batch=4, scale=100.0)
    a = VVALTModel(TINY)(x, t).last_hidden_state
    b = VVALTModel(TINY)(x, t).last_hidden_state
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal(a, VVALTModel(TINY)(x, t).last_hidden_state)
    assert a.dtype == jnp.float32 and float(jnp.max(jnp.abs(a))) <= 1.0
    assert not np.array_equal(np.asarray(a), np.asarray(VVALTModel(TINY.replace(seed=43))(x, t).last_hidden_state))


def test_task_vector_of_shape_T_is_shared_by_the_batch():
    x, t = inputs(TINY, batch=3)
    model = VVALTModel(TINY)
    chex.assert_trees_all_close(model(x, t[0]).last_hidden_state,
                                model(x, np.repeat(t[:1], 3, axis=0)).last_hidden_state, atol=0)


def test_component_invariants():
    x, t = inputs(TINY, batch=4)
    out = VVALTModel(TINY)(x, t)
    frames = np.asarray(out.hidden_states[0])
    np.testing.assert_allclose(np.linalg.norm(frames[:, 3], axis=-1), 1.0, atol=1e-5)  # relational unit norm
    assert np.all(np.abs(frames[:, 0]) <= 1.0)  # semantic in [-1, 1]
    np.testing.assert_allclose(np.asarray(out.attentions[0]).sum(-1), 1.0, atol=1e-6)
    chex.assert_shape(out.attentions[0], (4, 5, 5))
    chex.assert_shape(out.hidden_states, [(4, 5, 13)] * 3)
