"""The Hypertensor primitive: the original tests' exact numbers (originals.md 5.9) and validation errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels.htfr import INTERPOLATIONS, Hypertensor, interpolation_weights
from jaxmodels.htfr.hypertensor import reference_weights

C2 = np.array([[0, 1, 2], [2, 1, 0]], np.float32)


def local(name, d, band=1.0, C=C2, ref=5.0):
    return Hypertensor([1.0, 0.0], 0.0, -band, band, C, interpolation=name, reference_radius=ref).local([d, 0.0])


def test_normalisation_distance_and_weights_sum():
    h = Hypertensor([3.0, 4.0], 0.25, -1, 1, C2)
    np.testing.assert_allclose(h.n, [0.6, 0.8])
    assert h.distance([0.0, 0.0]) == pytest.approx(0.25)
    assert h.local([0.3, -0.1]).weights.sum() == pytest.approx(1.0)


def test_original_interpolation_numbers():
    r = local("lerp", 0.5)
    np.testing.assert_allclose(r.weights, [0, 0.5, 0.5]) and np.testing.assert_allclose(r.distance_derivative, [1, -1])
    r = local("lerp", -0.5)
    np.testing.assert_allclose(r.weights, [0.5, 0.5, 0]) and np.testing.assert_allclose(r.distance_derivative, [1, -1])
    r = local("hermite", 2.0)
    np.testing.assert_allclose(r.weights, [0, 0, 1], atol=1e-7)
    np.testing.assert_array_equal(r.distance_derivative, [0, 0])
    r = local("catmull_rom", -0.5)
    np.testing.assert_allclose(r.weights, [0.4375, 0.625, -0.0625])
    np.testing.assert_allclose(r.value, [0.5, 1.5]) and np.testing.assert_allclose(r.distance_derivative, [1, -1])
    r = local("local_poly", 0.0, C=np.array([[0, 1, 2]]))
    np.testing.assert_allclose(r.weights, [0, 1, 0]) and np.testing.assert_allclose(r.distance_derivative, [1])
    r = local("wavelet", 0.05, band=0.1, C=np.array([[0, 1, 2]]), ref=5.0)
    np.testing.assert_allclose(r.weights, [0, 0.02, 0.98], atol=1e-6)
    np.testing.assert_allclose(r.value, [1.98], rtol=1e-6)
    np.testing.assert_allclose(r.distance_derivative, [-0.4], rtol=1e-5)


def test_vectorised_weights_match_reference():
    rng = np.random.default_rng(0)
    n = 257
    d, dneg, dpos = rng.uniform(-3, 3, n), -rng.uniform(0.1, 2, n), rng.uniform(0.1, 2, n)
    ref = rng.choice([0.5, 5.0], n)
    weights = jax.jit(interpolation_weights)
    for kind, name in enumerate(INTERPOLATIONS):
        w, dw, dcl = weights(jnp.full(n, kind), d, dneg, dpos, ref)
        want = [reference_weights(name, *map(float, a)) for a in zip(d, dneg, dpos, ref)]
        err_w = np.abs(np.asarray(w) - np.array([x[0] for x in want]))
        err_dw = np.abs(np.asarray(dw) - np.array([x[1] for x in want]))
        assert err_w.max() < 1e-5 and err_w.mean() < 1e-6, name
        assert err_dw.max() < 1e-4 and err_dw.mean() < 1e-5, name


def test_tuples_and_clone():
    h = Hypertensor([1.0, 2.0], 0.1, -0.5, 0.7, C2, tau=0.8, interpolation="hermite", reference_radius=3.0)
    assert Hypertensor.from_tuple(h.to_tuple()[:6]).interpolation == "lerp"
    g = Hypertensor.from_tuple(h.to_tuple())
    assert g.interpolation == "hermite" and g.reference_radius == 3.0
    c = h.clone()
    c.C[0, 0] = 9
    assert h.C[0, 0] == 0
    with pytest.raises(ValueError, match="expected a 6- or 8-tuple, got 5 items"):
        Hypertensor.from_tuple(h.to_tuple()[:5])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=[0.0, 0.0]), "normal has zero length"),
    (dict(n=[[1.0, 0.0]]), r"normal must have shape \[D\] with D >= 1, got \(1, 2\)"),
    (dict(dneg=0.0), "band must satisfy dneg < 0 < dpos, got dneg=0.0, dpos=1.0"),
    (dict(dpos=-0.1), "band must satisfy dneg < 0 < dpos"),
    (dict(C=np.zeros((2, 2))), r"controls C must have shape \[O, 3\], got \(2, 2\)"),
    (dict(n=[np.nan, 1.0]), "normal contains NaN or inf"),
    (dict(interpolation="cubic"), "unknown interpolation 'cubic'"),
])
def test_validation_errors(kwargs, message):
    args = dict(n=[1.0, 0.0], delta=0.0, dneg=-1.0, dpos=1.0, C=C2) | kwargs
    with pytest.raises(ValueError, match=message):
        Hypertensor(**args)
