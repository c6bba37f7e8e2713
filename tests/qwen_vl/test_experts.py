"""SVF experts in the Qwen2.5-VL runner: an expert trained on our Flax Qwen2 gives the same logits in the runner,
composes with LoRA, is isolated per request (base weights bit-identical afterwards), and bad experts are refused."""

import asyncio

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxmodels
from jaxmodels_interop.qwen_vl import OnlineLLM
from jaxmodels_interop.qwen_vl.cli import main as cli_main
from jaxmodels_interop.qwen_vl.validate import qwen2_checkpoint
from jaxmodels.svf import ExpertMismatchError, SVFWrapper
from tests.hf_models import tiny_hf_model

PROMPT = "Name three colours."


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """(runner, Flax SVF wrapper on the same language model, z, expert path)."""
    llm = OnlineLLM(tiny_dir, temperature=0.0, max_tokens=5, lora_rank=4, lora_alpha=8, attn_implementation="sdpa")
    tmp = tmp_path_factory.mktemp("svf_expert")
    ours = jaxmodels.from_pretrained(qwen2_checkpoint(llm.hf_model, tmp / "qwen2"))
    wrapper = SVFWrapper(ours)
    rng = np.random.default_rng(3)
    z = {k: jnp.asarray(rng.normal(0.0, 2.0, v.shape), jnp.float32) for k, v in wrapper.z_vectors.items()}
    path = wrapper.save(tmp / "expert.safetensors", z, name="colours")
    llm.load_expert(path, "colours")
    return llm, wrapper, z, path


def test_runner_with_expert_matches_flax_with_the_same_expert(served):
    llm, wrapper, z, _ = served
    base = llm.logits(PROMPT).numpy()
    patched = llm.logits(PROMPT, svf_expert="colours").numpy()
    assert np.abs(patched - base).max() > 1e-2  # the expert really changes the model
    ids = llm.encode(PROMPT)["input_ids"].numpy()
    with jax.default_matmul_precision("highest"):
        flax = np.asarray(wrapper.patch_weights(z)(jnp.asarray(ids)).logits)
    np.testing.assert_allclose(patched, flax, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(llm.logits(PROMPT).numpy(), base)  # base weights restored bit for bit


def test_expert_composes_with_a_lora_adapter_and_is_undone(served):
    llm, *_ = served
    base = llm.logits(PROMPT).numpy()
    expert = llm.logits(PROMPT, svf_expert="colours").numpy()
    llm.learn(PROMPT, "red green blue", lora_adapter="colours_lora", steps=2, lr=5e-2)
    lora = llm.logits(PROMPT, lora_adapter="colours_lora").numpy()
    both = llm.logits(PROMPT, lora_adapter="colours_lora", svf_expert="colours").numpy()
    assert min(np.abs(both - lora).max(), np.abs(both - expert).max()) > 1e-3
    np.testing.assert_allclose(llm.logits(PROMPT, svf_expert="colours").numpy(), expert, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(llm.logits(PROMPT).numpy(), base)


def test_concurrent_requests_each_get_their_own_weights(served):
    llm, *_ = served
    alone = [llm.generate(PROMPT), llm.generate(PROMPT, svf_expert="colours")]

    async def both():
        return await asyncio.gather(llm.generate_async(PROMPT), llm.generate_async(PROMPT, svf_expert="colours"),
                                    llm.generate_async(PROMPT))

    plain, patched, plain_again = asyncio.run(both())
    assert [plain, patched, plain_again] == [alone[0], alone[1], alone[0]]
    assert llm.experts.current is None


def test_bad_experts_and_names_are_refused(served, tmp_path):
    llm, _, _, path = served
    base = llm.logits(PROMPT).numpy()
    with pytest.raises(KeyError, match="no SVF expert named 'nope'.*colours"):
        llm.generate(PROMPT, svf_expert="nope")
    with pytest.raises(ValueError, match="already loaded"):
        llm.load_expert(path, "colours")
    with pytest.raises(ValueError, match="expected letters"):
        llm.load_expert(path, "a b")
    # an expert made for another model: a Qwen2 with other widths, the same parameter names
    cfg = llm.hf_model.model.config.text_config
    other_dir = tmp_path / "other"
    tiny_hf_model("qwen2", other_dir, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                  intermediate_size=cfg.intermediate_size + 8, num_hidden_layers=cfg.num_hidden_layers,
                  num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads)
    other = SVFWrapper(jaxmodels.from_pretrained(other_dir))
    other_path = other.save(tmp_path / "other.safetensors")
    with pytest.raises(ExpertMismatchError, match="does not fit.*weight shape"):
        llm.load_expert(other_path, "other")
    assert llm.svf_experts == ["colours"]
    np.testing.assert_array_equal(llm.logits(PROMPT).numpy(), base)  # a refused expert changed nothing


def test_cli_generate_with_an_expert(served, tiny_dir, capsys):
    llm, _, _, path = served
    assert cli_main(["generate", str(tiny_dir), PROMPT, "--attn", "sdpa", "--max-tokens", "5",
                     "--svf-expert", str(path)]) == 0
    out = capsys.readouterr()
    assert "SVF expert" in out.err
    assert out.out.strip() == llm.generate(PROMPT, svf_expert="colours", max_tokens=5).strip()

