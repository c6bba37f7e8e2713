"""The two layer paths ("tuned" and "plain", jaxmodels.layers.backend): same numbers, and the right one chosen.

Both paths give the same logits and gradients (every parameter leaf) for Hyformer (lm and mlm, padding,
dropout), a grouped-query Llama, and Qwen3, Gemma 3 and Mistral with sliding windows shorter than the batch;
the plain path decodes with a cache as its full forward does (across Gemma 3's window too), and
`generate` picks the same tokens in both. "auto" means tuned on the CPU and plain on GPU/TPU (patched
`jax.default_backend`), where the lowered forward+backward has no custom VJP and no optimisation barrier;
JAXMODELS_LAYERS changes what "auto" means. Weights are perturbed so that attention is far from uniform.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmodels
from jaxmodels import (Gemma3Config, Gemma3ForCausalLM, Hyformer, HyformerConfig, LlamaConfig, LlamaForCausalLM,
                       MistralConfig, MistralForCausalLM, Qwen3Config, Qwen3ForCausalLM)
from jaxmodels.layers import attention, backend
from jaxmodels.layers.decoder import DecoderSpec
from jaxmodels.layers.linear import Embed, Linear

B, T = 3, 13
HYFORMER = HyformerConfig.tiny(attn_dropout=0.2, resid_dropout=0.1)  # V 17, D 24, 4 heads of 6, 2 layers
LLAMA = LlamaConfig(vocab_size=29, hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=31)  # untied head, half-split RoPE, GQA
# Sliding windows shorter than T; Gemma 3: local/global layers with their own RoPE, norms, GeGLU, softcapping.
NEW_FAMILIES = {
    "qwen3": (Qwen3ForCausalLM, Qwen3Config.tiny(layer_types=("full_attention", "sliding_attention"),
                                                 sliding_window=5, max_position_embeddings=31)),
    "gemma3": (Gemma3ForCausalLM, Gemma3Config.tiny(final_logit_softcapping=4.0, max_position_embeddings=31)),
    "mistral": (MistralForCausalLM, MistralConfig.tiny(sliding_window=6, max_position_embeddings=31)),
}


@pytest.fixture(autouse=True)
def _no_env_choice(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)


# Random numbers come from NumPy and dropout keys use the "rbg" PRNG: threefry's bits take XLA:CPU seconds to
# compile per program, and which generator makes the keep mask does not matter for comparing the two paths.
DROPOUT_KEY = jax.random.key(3, impl="rbg")


def _normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _perturbed(model):
    """The model with N(0, 0.3) added to every parameter (the 0.02 init leaves attention nearly uniform)."""
    params = nnx.state(model, nnx.Param)
    leaves, tree = jax.tree.flatten(params)
    nnx.update(model, jax.tree.unflatten(tree, [x + 0.3 * _normal(x.shape, i) for i, x in enumerate(leaves)]))
    return model


def _padded_batch(vocab: int, seed: int = 0):
    """ids [B, T] and attention_mask [B, T]: row 0 left-padded (its first queries see no key in lm), row 1
    right-padded, row 2 full."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (B, T))
    mask = np.ones((B, T), np.int32)
    mask[0, :4] = 0
    mask[1, 9:] = 0
    return jnp.asarray(ids), jnp.asarray(mask)


def _pair(model):
    """(tuned, plain) copies of one model: same weights, different layers."""
    return nnx.clone(model).use_layers("tuned"), nnx.clone(model).use_layers("plain")


@partial(jax.jit, static_argnames=("graphdef", "cases"))
def _logits_and_grads(graphdef, params, rest, ids, mask, ct, key, *, cases):
    """For each (task, dropout) case: logits [B, T, V] and the gradient of sum(logits * ct) per parameter."""
    def objective(p, task, dropout_key):
        logits = nnx.merge(graphdef, p, rest)(ids, task, attention_mask=mask, dropout_key=dropout_key).logits
        return jnp.sum(logits * ct), logits

    out = {}
    for task, dropout in cases:
        grads, logits = jax.grad(objective, has_aux=True)(params, task, key if dropout else None)
        out[task, dropout] = (logits, grads)
    return out


def _assert_paths_agree(model, cases, tol=1e-5):
    ids, mask = _padded_batch(model.spec.vocab_size)
    ct = _normal((B, T, model.spec.vocab_size), seed=2)  # a cotangent: every logit counts
    results = {}
    for layers, m in zip(("tuned", "plain"), _pair(model)):
        graphdef, params, rest = nnx.split(m, nnx.Param, ...)
        results[layers] = _logits_and_grads(graphdef, params, rest, ids, mask, ct, DROPOUT_KEY, cases=cases)
    for case in cases:
        (lt, gt), (lp, gp) = results["tuned"][case], results["plain"][case]
        assert np.all(np.isfinite(np.asarray(lp))), f"{case}: non-finite plain logits"
        np.testing.assert_allclose(lp, lt, rtol=0, atol=tol * max(1.0, float(jnp.max(jnp.abs(lt)))),
                                   err_msg=f"{case} logits")
        if case[1]:  # dropout is really on: the key changes the logits, in both paths alike
            assert float(jnp.max(jnp.abs(lt - results["tuned"][case[0], False][0]))) > 1e-2
        flat_t, flat_p = nnx.to_flat_state(gt), dict(nnx.to_flat_state(gp))
        assert len(flat_t) == len(flat_p)
        for path, g in flat_t:
            g, want = np.asarray(flat_p[path][...]), np.asarray(g[...])
            assert np.abs(want).max() > 0, f"{case} {path}: no gradient reaches this leaf"
            np.testing.assert_allclose(g, want, rtol=0, atol=tol * np.abs(want).max(), err_msg=f"{case} {path}")


def test_hyformer_paths_agree_with_padding_and_dropout():
    model = _perturbed(Hyformer(HYFORMER, rngs=nnx.Rngs(0)))
    _assert_paths_agree(model, cases=(("lm", False), ("mlm", False), ("lm", True)))  # lm: rows with no key


def test_llama_gqa_paths_agree():
    model = _perturbed(LlamaForCausalLM(LLAMA, rngs=nnx.Rngs(0)))
    _assert_paths_agree(model, cases=(("lm", False),))


@pytest.mark.parametrize("name", sorted(NEW_FAMILIES))
def test_new_family_paths_agree(name):
    cls, config = NEW_FAMILIES[name]
    _assert_paths_agree(_perturbed(cls(config, rngs=nnx.Rngs(0))), cases=(("lm", False),))


@pytest.mark.parametrize("dropout", [False, True], ids=["dot_product_attention", "einsum-dropout"])
def test_plain_attend_matches_tuned_on_an_empty_row(monkeypatch, dropout):
    """GQA (N 6, K 2), S > T; query 0 of row 0 sees no key: finite, the uniform average of v in both paths.

    Without dropout the plain path is `jax.nn.dot_product_attention` with its implementation left to JAX.
    """
    calls = []
    real = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    q, k, v = _normal((2, 5, 6, 4), 5), _normal((2, 7, 2, 4), 6), _normal((2, 7, 2, 4), 7)
    mask = np.tril(np.ones((5, 7), bool), k=2)[None].repeat(2, axis=0)
    mask[0, 0] = False
    rate, key = (0.3, DROPOUT_KEY) if dropout else (0.0, None)
    tuned, plain = (jax.jit(partial(attention.attend, dropout_rate=rate, layers=layers))(q, k, v, mask, key=key)
                    for layers in ("tuned", "plain"))
    assert [c["implementation"] for c in calls] == ([] if dropout else [None])
    assert np.all(np.isfinite(np.asarray(plain)))
    np.testing.assert_allclose(plain, tuned, atol=1e-6)
    if not dropout:
        uniform = jnp.repeat(jnp.mean(v[0], axis=0), 3, axis=0)  # [N, H]: each kv head serves G = 3 query heads
        np.testing.assert_allclose(plain[0, 0], uniform, atol=1e-6)


@pytest.mark.parametrize("cls, config", [(LlamaForCausalLM, LLAMA), NEW_FAMILIES["gemma3"]], ids=["llama", "gemma3"])
def test_plain_cached_decoding_equals_full_forward(cls, config):
    model = _perturbed(cls(config, rngs=nnx.Rngs(0))).use_layers("plain")
    ids, mask = _padded_batch(config.vocab_size, seed=4)
    ids, mask = ids[:2], mask[:2].at[1].set(1)  # row 0 left-padded, row 1 full
    graphdef, state = nnx.split(model)
    call = jax.jit(lambda s, x, m, c: nnx.merge(graphdef, s)(x, attention_mask=m, kv_caches=c))
    full = np.asarray(call(state, ids, mask, None).logits)
    out = call(state, ids[:, :6], mask[:, :6], model.init_cache(2, T))
    real = np.asarray(mask[:, :6], bool)  # a padding query has no real key: its output is arbitrary
    np.testing.assert_allclose(np.asarray(out.logits)[real], full[:, :6][real], atol=1e-5)
    for t in range(6, T):
        out = call(state, ids[:, t:t + 1], jnp.ones((2, 1), jnp.int32), out.extras["kv_caches"])
        np.testing.assert_allclose(out.logits[:, 0], full[:, t], atol=1e-5, err_msg=f"step {t}")


def test_generate_picks_the_same_tokens_in_both_paths():
    tuned, plain = _pair(_perturbed(LlamaForCausalLM(LLAMA, rngs=nnx.Rngs(0))))
    prompt = np.random.default_rng(6).integers(0, LLAMA.vocab_size, (2, 5))
    mask = np.ones_like(prompt)
    mask[1, :2] = 0
    got = [np.asarray(jaxmodels.generate(m, prompt, 10, attention_mask=mask)) for m in (tuned, plain)]
    np.testing.assert_array_equal(got[1], got[0])
    assert len(np.unique(got[0][:, 5:])) > 1  # not a degenerate constant continuation


# -- the choice -------------------------------------------------------------------------------------------------

def test_auto_is_tuned_on_cpu():
    assert jax.default_backend() == "cpu"
    assert backend.resolve() == backend.resolve("auto") == "tuned"
    assert LlamaForCausalLM(LLAMA, rngs=nnx.Rngs(0)).spec.layers == "auto"


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_auto_is_plain_on_accelerators(monkeypatch, platform):
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    assert backend.resolve("auto") == "plain"
    assert backend.resolve("tuned") == "tuned"  # an explicit choice stands on every backend


@pytest.mark.parametrize("env,platform,want", [("plain", "cpu", "plain"), ("tuned", "gpu", "tuned"),
                                               ("auto", "cpu", "tuned"), ("auto", "tpu", "plain"),
                                               ("", "gpu", "plain")])
def test_env_var_changes_what_auto_means(monkeypatch, env, platform, want):
    monkeypatch.setenv("JAXMODELS_LAYERS", env)
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    assert backend.resolve("auto") == want
    assert backend.resolve("tuned") == "tuned" and backend.resolve("plain") == "plain"


def test_bad_values_are_refused(monkeypatch):
    allowed = "choose one of 'auto', 'tuned', 'plain'"
    monkeypatch.setenv("JAXMODELS_LAYERS", "fast")
    with pytest.raises(ValueError, match=f"JAXMODELS_LAYERS='fast' is not a layer path; {allowed}"):
        backend.resolve("auto")
    assert backend.resolve("plain") == "plain"  # the variable only says what "auto" means
    with pytest.raises(ValueError, match=f"DecoderSpec.layers='Plain' is not a layer path; {allowed}"):
        DecoderSpec(vocab_size=5, d_model=4, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4, ffn_dim=8,
                    max_seq_len=8, layers="Plain")
    model = LlamaForCausalLM(LLAMA, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=f"layers='cpu' is not a layer path; {allowed}"):
        model.use_layers("cpu")
    assert model.spec.layers == "auto"


def test_use_layers_switches_every_layer_and_retraces():
    model = Hyformer(HyformerConfig.tiny(num_prediction_tasks=2), rngs=nnx.Rngs(0))
    assert model.use_layers("plain") is model and model.spec.layers == "plain"
    owned = [m for _, m in nnx.iter_modules(model) if isinstance(m, (Linear, Embed))]
    assert len(owned) == 1 + 2 * 7 + 1  # embedding, 7 projections per block, the prediction head's classifier
    assert all(m.layers == "plain" for m in owned)
    seen = []

    @partial(jax.jit, static_argnums=0)
    def traced(graphdef, state):
        seen.append(backend.resolve(nnx.merge(graphdef, state).spec.layers))
        return jnp.zeros(())

    for layers in ("tuned", "plain", "tuned"):
        traced(*nnx.split(model.use_layers(layers)))
    assert seen == ["tuned", "plain"]  # the spec is part of the graph definition: a switch retraces


def _forward_backward_texts(model) -> tuple[str, str]:
    """(jaxpr, lowered StableHLO) of the lm loss's value and gradient, with padding; lowered, not compiled."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, mask = _padded_batch(model.spec.vocab_size)

    def loss(p):
        return nnx.merge(graphdef, p, rest)(ids, attention_mask=mask, labels=ids).loss

    fn = jax.value_and_grad(loss)
    return str(jax.make_jaxpr(fn)(params)), jax.jit(fn).lower(params).as_text()


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_plain_lowering_has_no_barrier_and_no_custom_vjp(monkeypatch, platform):
    model = LlamaForCausalLM(LLAMA, rngs=nnx.Rngs(0))  # layers "auto"
    jaxpr, hlo = _forward_backward_texts(model)
    assert "custom_vjp_call" in jaxpr and "optimization_barrier" in hlo  # on the CPU: tuned (the check can fail)
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    jaxpr, hlo = _forward_backward_texts(model)
    assert "custom_vjp" not in jaxpr
    assert "optimization_barrier" not in hlo and "optimization_barrier" not in jaxpr
    assert "dot_general" in hlo
