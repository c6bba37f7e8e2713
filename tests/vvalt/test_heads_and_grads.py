"""Heads, losses and gradients: the whole model trains (the original trained only its head)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels import checkpoint
from jaxmodels.vvalt import VVALTForRegression, VVALTForSequenceClassification, VVALTModel, load
from tests.vvalt.helpers import TINY, adjacency, inputs


def _grads(model, x, t, y, adj=None):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p):
        return nnx.merge(graphdef, p, rest)(x, t, adj, labels=y).loss

    return jax.grad(loss_fn)(params)


@pytest.mark.parametrize("cls,labels", [(VVALTForSequenceClassification, np.array([0, 2, 1, 1])),
                                        (VVALTForRegression, np.linspace(-1, 1, 12).reshape(4, 3))],
                         ids=["classification", "regression"])
def test_gradients_reach_every_parameter(cls, labels):
    x, t = inputs(TINY, batch=4)
    grads = _grads(cls(TINY), x, t, labels, adjacency(TINY.frame_dim))
    flat = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
    assert len(flat) == 24  # 5x(W, b) encoder, 2 selector, 1 projector, 5 attention, 4 refiner, 2 head
    dead = [k for k, g in flat.items() if not np.any(g != 0) or not np.all(np.isfinite(g))]
    assert not dead, f"no gradient reaches {dead}"


def test_losses_match_hand_computation():
    x, t = inputs(TINY, batch=4)
    y = np.array([0, 2, 1, -100])
    out = VVALTForSequenceClassification(TINY)(x, t, labels=y)
    logits = np.asarray(out.logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(out.loss), -np.mean(logp[np.arange(3), y[:3]]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.last_hidden_state), logits.astype(np.float32))  # as the seed reads it
    assert out.final_output.shape == (4, TINY.frame_dim)

    reg = VVALTForRegression(TINY.replace(num_labels=1))
    target = np.linspace(-1, 1, 4)
    out = reg(x, t, labels=target)
    np.testing.assert_allclose(float(out.loss), np.mean((np.asarray(out.logits)[:, 0] - target) ** 2), rtol=1e-5)
    assert out.logits.shape == (4, 1)


@pytest.mark.parametrize("cls", [VVALTModel, VVALTForSequenceClassification, VVALTForRegression])
def test_native_checkpoint_round_trip(tmp_path, cls):
    model = cls(TINY)
    x, t = inputs(TINY, batch=3)
    model.save_pretrained(tmp_path / "ckpt")
    again = load(tmp_path / "ckpt")
    assert type(again) is cls and again.config == TINY
    np.testing.assert_array_equal(np.asarray(again(x, t).last_hidden_state), np.asarray(model(x, t).last_hidden_state))
    wide = load(tmp_path / "ckpt", dtype=jnp.float64)
    assert wide.dtype == jnp.float64
    assert set(checkpoint.flat_params(again)) == set(checkpoint.flat_params(model))


def test_checkpoint_with_a_missing_tensor_fails_naming_it(tmp_path):
    from safetensors.numpy import load_file, save_file

    VVALTModel(TINY).save_pretrained(tmp_path / "c")
    tensors = load_file(str(tmp_path / "c" / "model.safetensors"))
    del tensors["attention.W_output"]
    save_file(tensors, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensor 'attention.W_output'"):
        load(tmp_path / "c")
