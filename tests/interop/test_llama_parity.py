"""Llama / Qwen2 checkpoints from transformers: logits within 1e-4 on a 300+ token prompt, identical greedy
generation, every config variant the decoders implement, and refusal of the ones they do not."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
import transformers

import jaxmodels
from jaxmodels import LlamaForCausalLM
from tests.hf_models import left_padded_greedy, tiny_hf_model

BASE = dict(vocab_size=97, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=384, initializer_range=0.2, rms_norm_eps=1e-5)
VARIANTS = {
    "llama-mha-untied": ("llama", dict(num_key_value_heads=4)),
    "llama-gqa-tied-bias": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True, attention_bias=True,
                                          mlp_bias=True)),
    "llama-mqa-llama3-rope": ("llama", dict(num_key_value_heads=1, rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64))),
    "llama-linear-rope-head-dim": ("llama", dict(num_key_value_heads=2, head_dim=10,
                                                 rope_scaling=dict(rope_type="linear", factor=2.0))),
    "qwen2-gqa-tied": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
    "qwen2-gqa-untied": ("qwen2", dict(num_key_value_heads=2)),
}


def build(kind, extra, path):
    return tiny_hf_model(kind, path, **BASE, **extra)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    kind, extra = VARIANTS[request.param]
    path = tmp_path_factory.mktemp(request.param)
    return build(kind, extra, path), jaxmodels.from_pretrained(path), path


def test_logits_match_on_a_long_prompt(pair):
    hf, ours, _ = pair
    ids = np.random.RandomState(0).randint(0, 97, (2, 320))
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids)).logits)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_greedy_generation_is_token_identical(pair):
    hf, ours, _ = pair
    prompt = np.random.RandomState(1).randint(0, 97, (2, 11))
    with torch.no_grad():
        expected = hf.generate(torch.tensor(prompt), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                               pad_token_id=0).numpy()
    np.testing.assert_array_equal(np.asarray(jaxmodels.generate(ours, prompt, 24)), expected)


def test_left_padded_generation_matches_transformers(pair):
    hf, ours, _ = pair
    got, expected = left_padded_greedy(hf, ours, vocab=97, length=9, pad=4, new_tokens=12, seed=2)
    np.testing.assert_array_equal(got, expected)


def test_sharded_checkpoint_loads(tmp_path):
    hf = build("qwen2", dict(num_key_value_heads=2), tmp_path / "src")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ours = LlamaForCausalLM.from_pretrained(tmp_path / "sharded")
    ids = np.arange(30)[None] % 97
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(ids)).logits), expected, atol=1e-4)


@pytest.mark.parametrize("change, message", [
    (dict(hidden_act="gelu"), "unsupported llama config attributes: hidden_act='gelu'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "rope type 'yarn'"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
     "partial_rotary_factor"),
    (dict(attention_dropout=0.1), r"attention_dropout=0.1 \(implemented: 0, 0.0\)"),
    (dict(model_type="mixtral"), "unsupported model_type 'mixtral'"),
])
def test_unsupported_config_attributes_are_refused(tmp_path, change, message):
    build("llama", dict(num_key_value_heads=2), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        jaxmodels.from_pretrained(tmp_path)


def test_qwen2_sliding_window_is_refused(tmp_path):
    build("qwen2", dict(num_key_value_heads=2), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(use_sliding_window=True, sliding_window=16, layer_types=["sliding_attention"] * 2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_sliding_window=True .*layer_types="):
        jaxmodels.from_pretrained(tmp_path)


def test_config_that_does_not_match_the_weights(tmp_path):
    build("llama", dict(num_key_value_heads=2), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(intermediate_size=44, num_hidden_layers=3)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        jaxmodels.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "tensor 'model.layers.0.mlp.up_proj.weight' has shape (40, 24), expected (44, 24)" in msg
    assert "missing tensor 'model.layers.2.self_attn.q_proj.weight'" in msg
