"""An expert trained on our Flax Qwen2 applies to the transformers model: both give the same logits."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
import transformers

import jaxmodels
from jaxmodels_interop.svf_torch import apply_expert, restore_weights
from jaxmodels.svf import ExpertMismatchError, SVFWrapper
from tests.hf_models import tiny_hf_model
from tests.svf.helpers import logits

CFG = dict(vocab_size=61, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    return tiny_hf_model("qwen2", path, **CFG), jaxmodels.from_pretrained(path)


def expert(ours, tmp_path, pattern=None):
    w = SVFWrapper(ours) if pattern is None else SVFWrapper(ours, pattern=pattern)
    rng = np.random.default_rng(7)
    z = {k: jnp.asarray(rng.normal(0.0, 2.0, v.shape), jnp.float32) for k, v in w.z_vectors.items()}
    return w, z, w.save(tmp_path / "expert.safetensors", z)


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def test_expert_gives_the_same_logits_in_both_frameworks(pair, tmp_path):
    hf, ours = pair
    w, z, path = expert(ours, tmp_path)
    ids = np.random.default_rng(0).integers(0, 61, (2, 17))
    base = torch_logits(hf, ids)
    originals = apply_expert(hf, path)
    assert len(originals) == 6
    patched_torch = torch_logits(hf, ids)
    assert np.abs(patched_torch - base).max() > 1e-2  # the expert really changes the model
    np.testing.assert_allclose(logits(w.patch_weights(z), ids), patched_torch, atol=1e-4, rtol=0)
    restore_weights(hf, originals)
    np.testing.assert_array_equal(torch_logits(hf, ids), base)


def test_expert_applies_to_an_inner_language_model_and_attention_matrices(pair, tmp_path):
    hf, ours = pair
    w, z, path = expert(ours, tmp_path, pattern=r"attn\.(q|o)_proj|mlp\.down")
    ids = np.random.default_rng(1).integers(0, 61, (1, 9))
    originals = apply_expert(hf.model, path)  # the bare Qwen2Model: names without the "model." prefix
    assert sorted(originals)[0] == "layers.0.mlp.down_proj.weight"
    try:
        np.testing.assert_allclose(logits(w.patch_weights(z), ids), torch_logits(hf, ids), atol=1e-4, rtol=0)
    finally:
        restore_weights(hf.model, originals)


def test_expert_for_another_model_is_refused_by_torch(pair, tmp_path):
    hf, _ = pair
    tiny_hf_model("qwen2", tmp_path / "other", **{**CFG, "intermediate_size": 44})
    _, _, path = expert(jaxmodels.from_pretrained(tmp_path / "other"), tmp_path)
    with pytest.raises(ExpertMismatchError, match=r"does not fit Qwen2ForCausalLM: model\.layers\.0\.mlp\.down_proj"
                                                  r"\.weight: expert has weight shape \[24, 44\]"):
        apply_expert(hf, path)
    hyformer = jaxmodels.Hyformer.from_config(jaxmodels.HyformerConfig.tiny())
    _, _, path = expert(hyformer, tmp_path)
    with pytest.raises(ExpertMismatchError, match=r"its parameter names \(e.g. \['blocks\.0\.mlp\.down_proj\.weight'"):
        apply_expert(hf, path)


def test_expert_applies_to_the_language_model_of_qwen2_5_vl(pair, tmp_path):
    hf, ours = pair
    _, _, path = expert(ours, tmp_path)
    text = {k: v for k, v in CFG.items() if k != "initializer_range"}
    vl = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(
        text_config=dict(**text, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 1]}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=24,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0],
                           window_size=56),
        image_token_id=60, video_token_id=59, vision_start_token_id=58, vision_end_token_id=57)).eval()
    lm = vl.model.language_model
    lm.load_state_dict(hf.model.state_dict())  # the same text weights as the Qwen2 model
    originals = apply_expert(vl, path)
    assert sorted(originals)[0] == "model.language_model.layers.0.mlp.down_proj.weight"
    restore_weights(vl, originals)
    originals = apply_expert(lm, path)  # or the language model on its own
    hf_originals = apply_expert(hf, path)
    try:
        for name in originals:
            torch.testing.assert_close(dict(lm.named_parameters())[name], dict(hf.named_parameters())["model." + name])
    finally:
        restore_weights(hf, hf_originals)
