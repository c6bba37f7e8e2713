"""jaxmodels.lora: adapters as a parameter transform, their files, merging, and peft parity with transformers."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxmodels
from jaxmodels import lora
from jaxmodels.layers.axes import axes_of
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def model():
    """D 24, 4 heads / 2 kv heads of 6, MLP 40, 2 layers, weights drawn by NumPy (norms 1): no program compiled."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(
        np.ones(s.shape, np.float32) if len(s.shape) == 1 else 0.02 * rng.standard_normal(s.shape, np.float32)),
        state))


def randomised(adapters, seed=1, std=0.3):
    """Adapters with B drawn too (B starts at zero), so that the update is large and any layout error shows."""
    flat = nnx.to_flat_state(adapters)
    keys = jax.random.split(jax.random.key(seed), len(flat))
    return nnx.from_flat_state([(p, v.replace(std * jax.random.normal(k, v.shape)) if p[-1] == "lora_B" else v)
                                for (p, v), k in zip(flat, keys)])


def flat_values(state):
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def test_init_shapes_axes_and_a_start_at_the_base(model):
    config = lora.LoraConfig(rank=3, alpha=6.0, targets=ALL)
    adapters = lora.init(model, config, key=jax.random.key(0))
    flat = dict(nnx.to_flat_state(adapters))
    assert len(flat) == 2 * 7 * 2  # A and B, 7 Linears, 2 layers
    q_a, q_b = flat[("blocks", 0, "attn", "q_proj", "lora_A")], flat[("blocks", 0, "attn", "q_proj", "lora_B")]
    assert q_a.shape == (24, 3) and q_b.shape == (3, 4 * 6)
    assert axes_of(q_a) == ("embed", None) and axes_of(q_b) == (None, "heads")
    o_a = flat[("blocks", 1, "attn", "o_proj", "lora_A")]
    assert o_a.shape == (4 * 6, 3) and axes_of(o_a) == ("heads", None)
    assert np.abs(np.asarray(q_a[...])).max() <= 1 / np.sqrt(24)
    params = nnx.state(model, nnx.Param)
    same = lora.apply(params, adapters, config.scale)  # B = 0: the base model exactly
    for k, v in flat_values(params).items():
        np.testing.assert_array_equal(flat_values(same)[k], v)


def test_apply_adds_the_scaled_product_in_the_kernel_layout(model):
    config = lora.LoraConfig(rank=2, alpha=5.0, targets=("o_proj",))
    adapters = randomised(lora.init(model, config, key=jax.random.key(0)))
    out = flat_values(lora.apply(nnx.state(model, nnx.Param), adapters, config.scale))
    base = flat_values(nnx.state(model, nnx.Param))
    a, b = (np.asarray(adapters["blocks"][0]["attn"]["o_proj"][n][...]) for n in lora.FACTORS)
    expected = base["blocks.0.attn.o_proj.kernel"] + 2.5 * (a @ b).reshape(4, 6, 24)
    np.testing.assert_allclose(out["blocks.0.attn.o_proj.kernel"], expected, rtol=1e-6, atol=1e-6)
    untouched = [k for k in base if "o_proj" not in k]
    assert all(np.array_equal(out[k], base[k]) for k in untouched)


def test_bad_rank_and_targets_are_named(model):
    with pytest.raises(lora.LoraError, match=r"rank 13 exceeds a dimension of 2 targeted kernels: "
                                             r"blocks\.0\.attn\.k_proj\.kernel \(in 24, out 12\).*at most 12"):
        lora.init(model, lora.LoraConfig(rank=13, alpha=1.0, targets=("k_proj", "q_proj")), key=jax.random.key(0))
    with pytest.raises(lora.LoraError, match=r"unknown LoRA targets \['qkv'\]; the Linear layers of this "
                                             r"LlamaForCausalLM are down_proj, gate_proj, k_proj, o_proj, q_proj"):
        lora.targets(model, lora.LoraConfig(rank=2, alpha=1.0, targets=("q_proj", "qkv")))


def test_save_load_round_trip_and_mismatch(model, tmp_path):
    config = lora.LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "down_proj"), base_model="somewhere",
                             model_type="llama")
    adapters = randomised(lora.init(model, config, key=jax.random.key(3)))
    lora.save(tmp_path / "a", adapters, config)
    loaded, read = lora.load(tmp_path / "a", model)
    assert read == config
    assert json.loads((tmp_path / "a" / lora.CONFIG_FILE).read_text())["targets"] == ["down_proj", "q_proj"]
    for k, v in flat_values(adapters).items():
        np.testing.assert_array_equal(flat_values(loaded)[k], v)
    other = nnx.eval_shape(lambda: LlamaForCausalLM(LlamaConfig.tiny(intermediate_size=30), rngs=nnx.Rngs(0)))
    with pytest.raises(lora.LoraError, match=r"do not fit this LlamaForCausalLM: blocks\.0\.mlp\.down_proj\.lora_A: "
                                             r"shape \(40, 2\), the model needs \(30, 2\)"):
        lora.load(tmp_path / "a", other)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_ours_merged_export_and_peft_give_the_same_logits(kind, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    import transformers

    from tests.hf_models import tiny_hf_model

    tiny_hf_model(kind, tmp_path / "base", num_key_value_heads=2, tie_word_embeddings=False)
    base = jaxmodels.from_pretrained(tmp_path / "base")
    config = lora.LoraConfig(rank=3, alpha=6.0, targets=ALL, base_model=str(tmp_path / "base"), model_type=kind)
    adapters = randomised(lora.init(base, config, key=jax.random.key(0)))
    graphdef, params = nnx.split(base, nnx.Param)
    ids = np.random.RandomState(0).randint(0, 53, (2, 13))

    ours = np.asarray(nnx.merge(graphdef, lora.apply(params, adapters, config.scale))(jnp.asarray(ids)).logits)
    assert np.abs(ours - np.asarray(base(jnp.asarray(ids)).logits)).max() > 0.1  # the adapters matter

    lora.merge(base, adapters, config).export_hf(tmp_path / "merged")
    lora.export_peft(tmp_path / "peft", base, adapters, config)
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
        theirs_merged = merged(torch.tensor(ids)).logits.numpy()
        hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32).eval()
        with_peft = peft.PeftModel.from_pretrained(hf_base, tmp_path / "peft").eval()
        theirs_peft = with_peft(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(theirs_merged, ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(theirs_peft, ours, atol=1e-5, rtol=0)
    saved = json.loads((tmp_path / "peft" / lora.PEFT_CONFIG_FILE).read_text())
    assert saved["target_modules"] == sorted(ALL) and saved["r"] == 3 and saved["lora_alpha"] == 6.0
