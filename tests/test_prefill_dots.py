"""inference_jit's CPU dot mode follows the dtype of the computation: the precise dots (YNNPACK off) for a
float32 one, YNNPACK's for a bfloat16 one; JAXMODELS_CPU_DOTS=precise or fast forces one for both."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels.layers import backend

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the dot modes are XLA:CPU options")

PRECISE = backend.PRECISE_CPU_OPTIONS


def _state(dtype):
    """A model-state-like tree: kernels, a norm and (int8 layers) an int8 weight with float32 scales."""
    if dtype == "int8":
        return {"kernel": jnp.zeros((5, 7), jnp.int8), "scale": jnp.ones((7,), jnp.float32)}
    return {"kernel": jnp.zeros((5, 7), dtype), "norm": jnp.ones((5,), dtype)}


@pytest.mark.parametrize("dtype,options", [(jnp.bfloat16, {}), (jnp.float16, {}), (jnp.float32, PRECISE),
                                           ("int8", PRECISE)], ids=["bfloat16", "float16", "float32", "int8"])
def test_auto_follows_the_floating_point_width(monkeypatch, dtype, options):
    monkeypatch.delenv(backend.DOTS_ENV_VAR, raising=False)
    ids = jnp.zeros((1, 3), jnp.int32)
    temperature = jnp.float32(0.7)  # a scalar does not make a bfloat16 computation float32
    assert backend.inference_compiler_options(_state(dtype), ids, temperature) == options


def test_no_floating_point_array_and_no_arguments_are_precise(monkeypatch):
    monkeypatch.delenv(backend.DOTS_ENV_VAR, raising=False)
    assert backend.inference_compiler_options() == PRECISE
    assert backend.inference_compiler_options(jnp.zeros((2, 3), jnp.int32), jnp.float32(1.0)) == PRECISE
    mixed = {"a": jnp.zeros((3,), jnp.bfloat16), "b": jnp.zeros((3,), jnp.float32)}
    assert backend.inference_compiler_options(mixed) == PRECISE


@pytest.mark.parametrize("mode,options", [("precise", PRECISE), ("fast", {}), ("", None), ("auto", None)])
def test_the_environment_variable_forces_a_mode(monkeypatch, mode, options):
    monkeypatch.setenv(backend.DOTS_ENV_VAR, mode)
    for dtype in (jnp.bfloat16, jnp.float32):
        auto = {} if dtype == jnp.bfloat16 else PRECISE
        assert backend.inference_compiler_options(_state(dtype)) == (auto if options is None else options)


def test_an_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv(backend.DOTS_ENV_VAR, "turbo")
    with pytest.raises(ValueError, match="JAXMODELS_CPU_DOTS='turbo' is not a dot mode; choose one of 'auto', "
                                         "'precise', 'fast'"):
        backend.inference_compiler_options(_state(jnp.float32))


def test_inference_jit_compiles_each_width_with_its_dots(monkeypatch):
    """One jitted function per mode; the bfloat16 call's dot goes to YNNPACK with its bfloat16 operands, the
    float32 call's to XLA's own dot."""
    monkeypatch.delenv(backend.DOTS_ENV_VAR, raising=False)

    def f(x, w):
        return jnp.einsum("td,dv->tv", x, w, preferred_element_type=jnp.float32).astype(x.dtype)

    jitted = backend.inference_jit(f)
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.standard_normal((64, 48))), jnp.asarray(rng.standard_normal((48, 80)))
    for dtype, ynn in ((jnp.float32, False), (jnp.bfloat16, True)):
        args = (x.astype(dtype), w.astype(dtype))
        hlo = jitted.jitted(*args).lower(*args).compile().as_text()
        assert ("__ynn_fusion" in hlo) == ynn
        np.testing.assert_allclose(np.asarray(jitted(*args), np.float32), np.asarray(f(*args), np.float32),
                                   rtol=1e-2 if ynn else 1e-6, atol=1e-2 if ynn else 1e-5)
    assert len(jitted._jitted) == 2
    assert jitted.jitted() is jitted.jitted(x, w)  # no arguments: the float32 (precise) function
