"""The jitted field against the per-sample NumPy rule, the model API, bad input, init and checkpoints."""

import jax
import numpy as np
import pytest

from jaxmodels.htfr import (HTFRConfig, HTFRModel, Hypertensor, ReferenceField, kmeans, kmeans_tensors, load_field,
                            save_field)
from jaxmodels.htfr.init import random_tensors

M, D, O = 37, 11, 5  # as in conftest.py


def test_sequential_mode_equals_per_sample_numpy(small_model, data):
    x, y = data
    ref = ReferenceField(small_model.state, small_model.config, anchor_dtype=np.float64)
    want = [ref.predict_and_update(xi, yi) for xi, yi in zip(x, y)]
    got, losses = small_model.predict_and_update(x, y, "mse", return_losses=True)  # 4 chunks of 8, one padded
    np.testing.assert_allclose(got, np.array([w[0] for w in want]), atol=2e-5)
    np.testing.assert_allclose(losses, [w[1] for w in want], rtol=1e-4)
    s = jax.device_get(small_model.state)
    assert int(s.relocations) == ref.relocations > 0
    np.testing.assert_allclose(s.normals, ref.normals, atol=2e-5)
    np.testing.assert_allclose(s.deltas, ref.deltas, atol=2e-5)
    np.testing.assert_allclose(np.transpose(s.controls, (0, 2, 1)), ref.controls, atol=2e-5)
    np.testing.assert_allclose(s.usage, ref.usage, rtol=1e-5)
    np.testing.assert_allclose(small_model.predict(x[:6]), [ref.predict(xi) for xi in x[:6]], atol=2e-5)


def test_cross_entropy_with_labels_and_inverse_weights(data):
    x, _ = data
    cfg = HTFRConfig(top_k=5, train_top_k=7, weight_mode="inverse", max_knn_radius=0.4, chunk_size=8)
    model = HTFRModel.from_arrays(random_tensors(M, D, O, seed=3), cfg, seed=1)
    ref = ReferenceField(model.state, cfg, anchor_dtype=np.float64)
    labels = np.arange(len(x)) % O
    want = [ref.predict_and_update(xi, int(t), "logits_ce") for xi, t in zip(x[:9], labels[:9])]
    got, losses = model.predict_and_update(x[:9], labels[:9], "logits_ce", return_losses=True)
    np.testing.assert_allclose(got, [w[0] for w in want], atol=2e-5)
    np.testing.assert_allclose(losses, [w[1] for w in want], rtol=1e-4)
    assert model.predict_and_update(x[0], 2, "logits_ce").shape == (O,)


def test_batched_mode_improves_and_eval_does_not_touch_state(small_model, data):
    x, y = data
    before = small_model.predict_and_update(x, y, train=False, return_losses=True)[1].mean()
    frozen = jax.device_get(small_model.state)
    np.testing.assert_array_equal(jax.device_get(small_model.state).normals, frozen.normals)
    for _ in range(5):
        small_model.predict_and_update(x, y, mode="batched")
    after = small_model.predict_and_update(x, y, train=False, return_losses=True)[1].mean()
    assert after < before


def test_locality_weights_and_fallback(small_model, data):
    w = small_model.locality_weights([0.1, -0.5, 2.0])
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1] > w[2]
    tiny = small_model.with_config(locality_radius=1e-9)  # nothing is local: the fallback list is used
    ref = ReferenceField(tiny.state, tiny.config, anchor_dtype=np.float64)
    np.testing.assert_allclose(tiny.predict(data[0][:3]), [ref.predict(v) for v in data[0][:3]], atol=2e-5)


def test_bad_inputs(small_model):
    with pytest.raises(ValueError, match=r"x of shape \(2, 7\) does not match the field's input width D = 11"):
        small_model.predict(np.zeros((2, 7)))
    bad = np.zeros((3, D))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf in rows \[1\]"):
        small_model.predict(bad)
    with pytest.raises(ValueError, match=r"targets of shape \(3, 4\), expected \[3, 5\]"):
        small_model.predict_and_update(np.zeros((3, D)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        small_model.predict_and_update(np.zeros(D), np.zeros(O), "l1")
    with pytest.raises(ValueError, match="weight_mode 'cosine' is not one of"):
        HTFRConfig(weight_mode="cosine")
    with pytest.raises(ValueError, match="interpolation_weights must be >= 0 with a positive sum"):
        HTFRConfig(interpolation_weights=(("lerp", 0.0),))
    with pytest.raises(ValueError, match="the field would be empty"):
        HTFRModel.from_tensors([])
    arrays = random_tensors(3, D, O, seed=0)
    with pytest.raises(ValueError, match=r"an empty field cannot predict"):
        HTFRModel.from_arrays({k: v[:0] for k, v in arrays.items()})
    arrays["dneg"][1] = 0.2
    with pytest.raises(ValueError, match=r"inverted band at tensors \[1\] \(e.g. tensor 1: dneg=0.2"):
        HTFRModel.from_arrays(arrays)
    arrays = random_tensors(3, D, O, seed=0)
    arrays["normals"][2] = 0
    with pytest.raises(ValueError, match=r"normals of tensors \[2\] are zero"):
        HTFRModel.from_arrays(arrays)
    with pytest.raises(ValueError, match=r"controls must have shape \[M, O, 3\] = \[3, O, 3\]"):
        HTFRModel.from_arrays(random_tensors(3, D, O, seed=0) | {"controls": np.zeros((3, O, 2))})


def test_from_tensors_keeps_interpolations_and_seeding():
    ts = [Hypertensor(np.eye(D)[i], 0.1 * i, -0.5, 0.5, np.ones((O, 3)), interpolation=name)
          for i, name in enumerate(["wavelet", "hermite", "lerp"])]
    model = HTFRModel.from_tensors(ts)
    assert model.interpolations == ["wavelet", "hermite", "lerp"]
    assert [t.interpolation for t in model.tensors()] == ["wavelet", "hermite", "lerp"]
    model.seed_random_tensors(4, seed=0)
    assert model.size == 7
    a, b = HTFRModel.random(13, D, O, seed=5), HTFRModel.random(13, D, O, seed=5)
    assert a.interpolations == b.interpolations
    np.testing.assert_array_equal(np.asarray(a.state.normals), np.asarray(b.state.normals))


def test_kmeans_init():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(40, 2)) * [3, 0.1], rng.normal(size=(40, 2)) * [3, 0.1] + [0, 10]])
    arrays = kmeans_tensors(pts, np.ones((80, 2)), 2, seed=0, reference_radius=2.5)
    np.testing.assert_allclose(np.abs(arrays["normals"]), [[1, 0], [1, 0]], atol=0.05)
    assert np.all(arrays["ref_radius"] == 2.5) and arrays["controls"].shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, N = 80\], got 81"):
        kmeans(pts, 81, seed=0)


def test_save_load_round_trip(tmp_path, small_model, data):
    x, y = data
    small_model.predict_and_update(x[:12], y[:12])
    save_field(tmp_path / "field.npz", small_model)
    loaded = load_field(tmp_path / "field.npz")
    assert loaded.config == small_model.config and loaded.interpolations == small_model.interpolations
    for a, b in zip(jax.tree.leaves(jax.device_get(loaded.state)), jax.tree.leaves(jax.device_get(small_model.state))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_and_update(x[12:], y[12:]),
                                  small_model.predict_and_update(x[12:], y[12:]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_field(tmp_path / "missing.npz")


def test_float16_state_stays_float16(data):
    import jax.numpy as jnp

    cfg = HTFRConfig(top_k=3, train_top_k=4, chunk_size=8, max_knn_radius=0.3, error_threshold=0.1,
                     relocation_interval=2, max_error_queue=4)
    model = HTFRModel.from_arrays(random_tensors(M, D, O, seed=0), cfg, dtype=jnp.float16)
    x, y = data
    model.predict_and_update(x, y)
    s = model.state
    assert {str(a.dtype) for a in (s.normals, s.deltas, s.dneg, s.dpos, s.controls, s.usage)} == {"float16"}
    assert model.diagnostics()["relocations"] > 0 and np.all(np.isfinite(model.predict(x)))


def test_batched_mode_with_one_sample_is_the_sequential_rule(small_model, data):
    x, y = data
    other = HTFRModel(jax.tree.map(lambda a: a.copy(), small_model.state), small_model.config)
    for i in range(3):
        a = small_model.predict_and_update(x[i:i + 1], y[i:i + 1], mode="batched")
        b = other.predict_and_update(x[i:i + 1], y[i:i + 1], mode="sequential")
        np.testing.assert_allclose(a, b, atol=2e-6)
    for u, v in zip(jax.tree.leaves(jax.device_get(small_model.state)), jax.tree.leaves(jax.device_get(other.state))):
        np.testing.assert_allclose(u, v, atol=2e-5)
