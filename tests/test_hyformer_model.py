"""Hyformer forward: parity with a NumPy reference, masks, caches, determinism, checkpoints, bad input."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmodels
from jaxmodels import Hyformer, HyformerConfig, PredictionHead
from jaxmodels.checkpoint import flat_params
from tests import reference_hyformer as ref

CFG = HyformerConfig.tiny(num_prediction_tasks=3)  # V 17, D 24, 4 heads (H 6), 2 layers, max_seq_len 31


@pytest.fixture(scope="module")
def model():
    return Hyformer.from_config(CFG, seed=0)


@pytest.fixture(scope="module")
def params(model):
    return {k: np.asarray(v) for k, v in flat_params(model).items()}


def ids_(b=3, t=13, seed=0):
    return np.random.RandomState(seed).randint(0, CFG.vocab_size, (b, t))


def test_lm_logits_match_numpy_reference(model, params):
    ids = ids_()
    out = model(jnp.asarray(ids), "lm")
    hidden, logits = ref.forward(params, CFG, ids, causal=True)
    chex.assert_shape(out.logits, (3, 13, 17))
    np.testing.assert_allclose(out.logits, logits, atol=1e-5)
    np.testing.assert_allclose(out.extras["hidden_states"], hidden, atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_padding_mask_matches_reference(model, params, side):
    ids = ids_()
    mask = np.ones_like(ids)
    if side == "right":
        mask[0, 9:] = 0
        mask[2, 4:] = 0
    else:
        mask[0, :5] = 0
        mask[1, :1] = 0
    out = model(jnp.asarray(ids), "mlm", attention_mask=jnp.asarray(mask))
    _, logits = ref.forward(params, CFG, ids, causal=False, attention_mask=mask)
    np.testing.assert_allclose(out.logits, logits, atol=1e-5)


def test_padding_tokens_do_not_leak(model):
    """Changing padded tokens leaves every real position unchanged (an inverted mask would not)."""
    ids = ids_()
    mask = np.ones_like(ids)
    mask[:, 8:] = 0
    other = ids.copy()
    other[:, 8:] = (other[:, 8:] + 5) % CFG.vocab_size
    for task in ("mlm", "lm"):
        a = model(jnp.asarray(ids), task, attention_mask=jnp.asarray(mask)).logits
        b = model(jnp.asarray(other), task, attention_mask=jnp.asarray(mask)).logits
        np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)
        assert np.all(np.isfinite(np.asarray(a)))


def test_causal_lm_ignores_the_future(model):
    ids = ids_()
    changed = ids.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % CFG.vocab_size
    a, b = model(jnp.asarray(ids), "lm").logits, model(jnp.asarray(changed), "lm").logits
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert np.max(np.abs(np.asarray(a[:, 7:] - b[:, 7:]))) > 1e-3


def test_prediction_head_on_first_token(model, params):
    ids = ids_()
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    out = model(jnp.asarray(ids), "prediction", attention_mask=jnp.asarray(mask))
    hidden, _ = ref.forward(params, CFG, ids, causal=False, attention_mask=mask)
    pooled = ref.layer_norm(hidden[:, 0], params["prediction_head.norm.weight"],
                            params["prediction_head.norm.bias"], 1e-5)
    expected = pooled @ params["prediction_head.classifier.kernel"] + params["prediction_head.classifier.bias"]
    np.testing.assert_allclose(out.logits, expected, atol=1e-5)


@pytest.mark.parametrize("left_pad", [False, True])
def test_cached_decoding_equals_full_forward(model, left_pad):
    ids = ids_(2, 14, seed=3)
    mask = np.ones_like(ids)
    if left_pad:
        mask[0, :3] = 0
    full = np.asarray(model(jnp.asarray(ids), "lm", attention_mask=jnp.asarray(mask)).logits)
    out = model(jnp.asarray(ids[:, :6]), "lm", attention_mask=jnp.asarray(mask[:, :6]), use_cache=True)
    real = mask[:, :6].astype(bool)  # padding positions have no real key to attend to: their output is arbitrary
    np.testing.assert_allclose(np.asarray(out.logits)[real], full[:, :6][real], atol=1e-5)
    cache = out.extras["kv_caches"]
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, tok, c: nnx.merge(graphdef, s)(tok, "lm", attention_mask=jnp.ones((2, 1), jnp.int32),
                                                          kv_caches=c))
    for t in range(6, 14):
        out = step(state, jnp.asarray(ids[:, t:t + 1]), cache)
        cache = out.extras["kv_caches"]
        np.testing.assert_allclose(out.logits[:, 0], full[:, t], atol=1e-5, err_msg=f"step {t}")
    assert int(cache.index) == 14


def test_same_seed_same_bits_and_init_statistics():
    a = flat_params(Hyformer.from_config(CFG, seed=7))
    b = flat_params(Hyformer.from_config(CFG, seed=7))
    c = flat_params(Hyformer.from_config(CFG, seed=8))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["embed.weight"], c["embed.weight"])
    big = flat_params(Hyformer.from_config(HyformerConfig.small(), seed=0))
    assert abs(float(np.std(big["blocks.0.mlp.up_proj.kernel"])) - 0.02) < 1e-3
    np.testing.assert_array_equal(big["blocks.0.mlp.up_proj.bias"], 0.0)
    np.testing.assert_array_equal(big["final_norm.weight"], 1.0)


def test_parameter_layout_maps_onto_the_original_keys(model):
    keys = set(flat_params(model))
    d = CFG.d_model
    expected = {"embed.weight", "final_norm.weight", "final_norm.bias", "prediction_head.norm.weight",
                "prediction_head.norm.bias", "prediction_head.classifier.kernel", "prediction_head.classifier.bias"}
    for i in range(CFG.n_layers):
        expected |= {f"blocks.{i}.{n}" for n in (
            "input_norm.weight", "post_attn_norm.weight", "attn.q_proj.kernel", "attn.k_proj.kernel",
            "attn.v_proj.kernel", "attn.o_proj.kernel", "mlp.gate_proj.kernel", "mlp.gate_proj.bias",
            "mlp.up_proj.kernel", "mlp.up_proj.bias", "mlp.down_proj.kernel", "mlp.down_proj.bias")}
    assert keys == expected  # no lm/mlm head tensors: they are the embedding
    per_layer = 4 * d * d + 2 * d + 2 * (d * 4 * d + 4 * d) + 4 * d * d + d
    assert model.get_num_params() == 17 * d + CFG.n_layers * per_layer + 2 * d + 2 * d + d * 3 + 3


def test_tied_heads_receive_gradient_through_the_embedding(model):
    ids = jnp.asarray(ids_() % 16)  # token 16 never appears
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        return nnx.merge(graphdef, p)(ids, "lm", labels=ids).loss

    g = nnx.to_pure_dict(jax.grad(loss)(params))["embed"]["weight"]
    # A token never fed in still gets gradient, through the tied output head.
    assert float(jnp.abs(g[16]).sum()) > 1e-6


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "hyformer" and cfg["num_prediction_tasks"] == 3
    for loaded in (Hyformer.from_pretrained(tmp_path / "m"), jaxmodels.from_pretrained(tmp_path / "m")):
        for k, v in flat_params(model).items():
            np.testing.assert_array_equal(flat_params(loaded)[k], v)
    bf16 = jaxmodels.from_pretrained(tmp_path / "m", dtype=jnp.bfloat16)
    assert flat_params(bf16)["embed.weight"].dtype == jnp.bfloat16
    out = bf16(jnp.asarray(ids_()), "lm")
    np.testing.assert_allclose(np.asarray(out.logits, np.float32), model(jnp.asarray(ids_()), "lm").logits, atol=0.05)


def test_loading_reports_every_problem(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    model.save_pretrained(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    del tensors["final_norm.bias"]
    tensors["embed.weight"] = tensors["embed.weight"][:5]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        Hyformer.from_pretrained(tmp_path / "m")
    msg = str(e.value)
    assert "missing tensor 'final_norm.bias'" in msg
    assert "'embed.weight' has shape (5, 24), expected (17, 24)" in msg
    assert "unexpected tensor 'extra.weight'" in msg
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Hyformer.from_pretrained(tmp_path / "m")


def test_full_size_shapes_without_memory():
    cfg = HyformerConfig.base(vocab_size=32000, max_seq_len=2048)
    abstract = nnx.eval_shape(lambda: Hyformer(cfg, rngs=nnx.Rngs(0)))
    out = jax.eval_shape(lambda m, x: m(x, "lm").logits, abstract, jax.ShapeDtypeStruct((2, 2048), jnp.int32))
    assert out.shape == (2, 2048, 32000)


def test_prediction_wrapper():
    base = Hyformer.from_config(HyformerConfig.tiny(), seed=1)
    wrapper = PredictionHead(base, num_labels=1, rngs=nnx.Rngs(2))
    logits, loss = wrapper(jnp.asarray(ids_(4, 9)), "prediction", jnp.ones((4, 9)), jnp.array([1.0, 2.0, np.nan, 3.0]))
    chex.assert_shape(logits, (4, 1))
    assert np.isfinite(float(loss))
    with pytest.raises(ValueError, match="does not match the base model's d_model=24"):
        PredictionHead(base, num_labels=2, d_model=32)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m(x, "generate"), r"unknown task 'generate'; valid tasks are \['lm', 'mlm', 'prediction'\]"),
    (lambda m, x: m(x.at[0, 0].set(17), "lm"), r"token ids must lie in \[0, 17\) \(vocab_size\); got values from"),
    (lambda m, x: m(x.at[0, 0].set(-1), "lm"), r"token ids must lie in \[0, 17\)"),
    (lambda m, x: m(jnp.zeros((1, 32), jnp.int32), "lm"), "sequence length 32 exceeds the max_seq_len 31"),
    (lambda m, x: m(x, "mlm", attention_mask=jnp.ones((3, 12))),
     r"attention_mask has shape \(3, 12\), expected the shape of input_ids \(3, 13\)"),
    (lambda m, x: m(x.astype(jnp.float32), "lm"), r"input_ids must be an integer array of shape \[B, T\]"),
    (lambda m, x: m(x, "mlm", use_cache=True), "a KV cache is only used by the causal task 'lm'"),
    (lambda m, x: m(x, "lm", labels=x[:, :5]), r"lm labels must have shape \(3, 13\), got \(3, 5\)"),
])
def test_bad_input_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, jnp.asarray(ids_()))


def test_prediction_without_head_is_an_error():
    m = Hyformer.from_config(HyformerConfig.tiny())
    with pytest.raises(ValueError, match="needs a prediction head: set num_prediction_tasks"):
        m(jnp.zeros((1, 3), jnp.int32), "prediction")


def test_jitted_call_checks_shapes_but_not_values(model):
    """Inside jit the id range cannot be checked eagerly; shapes still are."""
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, "lm").logits)
    assert f(state, jnp.asarray(ids_())).shape == (3, 13, 17)
    with pytest.raises(ValueError, match="exceeds the max_seq_len 31"):
        f(state, jnp.zeros((1, 40), jnp.int32))
