"""Activation checkpointing (DecoderSpec.remat / Decoder.use_remat): the same loss and gradients, with the
blocks recomputed in the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels.llama import LlamaConfig, LlamaForCausalLM

CONFIG = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64)


@pytest.mark.parametrize("layers", ["tuned", "plain"])
def test_remat_same_gradients_and_checkpointed_blocks(layers):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 96, (2, 16)))
    results = {}
    for remat in (False, True):
        model = LlamaForCausalLM(CONFIG, rngs=nnx.Rngs(0)).use_layers(layers).use_remat(remat)
        graphdef, params = nnx.split(model, nnx.Param)
        loss = lambda p: nnx.merge(graphdef, p)(ids, labels=ids).loss
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
        results[remat] = jax.jit(jax.value_and_grad(loss))(params), jaxpr.count("remat")  # the jax.checkpoint primitive
    (loss0, grads0), regions0 = results[False]
    (loss1, grads1), regions1 = results[True]
    assert regions0 == 0 and regions1 == CONFIG.num_hidden_layers
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads0), jax.tree.leaves(grads1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
