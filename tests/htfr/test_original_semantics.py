"""Two behaviours of the original's model (issue 18): evaluation selects top_k tensors, and a model built from
tensors gives each one the model's interpolation reference as its reference radius."""

import numpy as np

from jaxmodels.htfr import HTFRConfig, HTFRModel, Hypertensor, ReferenceField

D, O = 11, 5  # as in conftest.py


def test_evaluation_uses_top_k_not_train_top_k(small_model, data):
    x, y = data
    cfg = small_model.config
    assert cfg.top_k < cfg.train_top_k
    ref = ReferenceField(small_model.state, cfg, anchor_dtype=np.float64)
    yhat, losses = small_model.predict_and_update(x[:7], y[:7], train=False, return_losses=True)
    np.testing.assert_allclose(yhat, [ref.predict(v, cfg.top_k) for v in x[:7]], atol=2e-5)
    np.testing.assert_allclose(yhat, small_model.predict(x[:7]), atol=1e-6)
    np.testing.assert_allclose(losses, np.mean((yhat - y[:7]) ** 2, axis=1), rtol=1e-5)
    wide = np.array([ref.predict(v, cfg.train_top_k) for v in x[:7]])
    assert np.abs(wide - yhat).max() > 1e-3  # the train_top_k neighbourhood predicts something else


def _wavelet(reference_radius):
    n = np.eye(D)[0]
    c = np.arange(3 * O, dtype=np.float32).reshape(O, 3) / 7.0
    return Hypertensor(n, 0.0, -0.1, 0.1, c, interpolation="wavelet", reference_radius=reference_radius)


def test_from_tensors_sets_the_interpolation_reference():
    x = np.zeros(D, np.float32)
    x[0] = 0.05  # d = 0.05 inside the band: wavelet t = d / max(0.1, reference radius)
    cfg = HTFRConfig(top_k=1, train_top_k=1, max_knn_radius=1.0)  # interpolation reference 5.0
    model = HTFRModel.from_tensors([_wavelet(0.3)], cfg)
    assert np.asarray(model.state.ref_radius).tolist() == [5.0] and model.tensors()[0].reference_radius == 5.0
    np.testing.assert_allclose(model.predict(x), _wavelet(5.0).local(x).value, atol=1e-6)
    kept = HTFRModel.from_tensors([_wavelet(0.3)], cfg, keep_reference_radius=True)
    np.testing.assert_allclose(np.asarray(kept.state.ref_radius), [0.3])
    np.testing.assert_allclose(kept.predict(x), _wavelet(0.3).local(x).value, atol=1e-6)
    assert np.abs(kept.predict(x) - model.predict(x)).max() > 0.04
    ref2 = HTFRModel.from_tensors([_wavelet(0.3)], HTFRConfig(top_k=1, train_top_k=1, interpolation_reference=2.0))
    assert np.asarray(ref2.state.ref_radius).tolist() == [2.0]
