"""Real LoRA: adapters on the language model only, isolated from each other and from the base, learned with the
loss on the response only, one optimizer state each, saved and loaded in peft's format."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jaxmodels_interop.qwen_vl import OnlineLLM
from jaxmodels_interop.qwen_vl.prompts import IGNORE_INDEX, encode_example

PROMPT, ANSWER = "Who is a good dog?", "a golden retriever"


def base_weights(llm):
    """Base parameters by their transformers names (peft moves a wrapped Linear's weight under .base_layer)."""
    return {n.replace(".base_layer", ""): p.detach().clone()
            for n, p in llm.hf_model.model.named_parameters() if "lora_" not in n}


def test_labels_cover_only_the_response(llm, image):
    batch = encode_example(llm.hf_model.processor, PROMPT, ANSWER, [image], chat=True, device=llm.device)
    prompt_len = llm.encode(PROMPT, image)["input_ids"].shape[1]
    labels = batch["labels"][0]
    assert (labels[:prompt_len] == IGNORE_INDEX).all()
    tok = llm.hf_model.tokenizer
    assert tok.decode(labels[prompt_len:]) == ANSWER + "<|im_end|>"
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape


def test_adapters_are_isolated_from_each_other_and_from_the_base(llm, image):
    base_before = base_weights(llm)
    base_logits = llm.logits(PROMPT)
    losses = llm.learn(PROMPT, ANSWER, lora_adapter="retriever", steps=8, lr=2e-2)
    assert losses[-1] < losses[0] / 2
    assert llm.generate(PROMPT, lora_adapter="retriever", max_tokens=8) == ANSWER
    llm.learn(PROMPT, "a small cat", lora_adapter="cat", steps=8, lr=2e-2, images=image)
    b_logits = llm.logits(PROMPT, lora_adapter="cat", images=image)
    # learning "cat" did not touch "retriever", and neither touched the base
    assert llm.generate(PROMPT, lora_adapter="retriever", max_tokens=8) == ANSWER
    assert llm.generate(PROMPT, lora_adapter="cat", images=image, max_tokens=8) == "a small cat"
    torch.testing.assert_close(llm.logits(PROMPT), base_logits, atol=0, rtol=0)
    after = base_weights(llm)
    assert after.keys() == base_before.keys()
    assert all(torch.equal(after[n], w) for n, w in base_before.items())
    assert not torch.equal(b_logits, llm.logits(PROMPT, lora_adapter="retriever", images=image))
    assert llm.lora_adapters == ["cat", "retriever"]


def test_lora_sits_only_in_the_language_model(llm):
    llm.learn(PROMPT, ANSWER, lora_adapter="placement", steps=1, lr=1e-3)
    lora = [n for n, _ in llm.hf_model.model.named_parameters() if "lora_" in n]
    assert lora and all(n.startswith("model.language_model.layers.") for n in lora)
    assert not any("visual" in n for n in lora)
    a = [p for n, p in llm.hf_model.model.named_parameters() if ".placement." in n and "lora_A" in n][0]
    assert a.shape[0] == 4  # lora_rank
    assert not any(p.requires_grad for p in llm.hf_model.model.parameters())


def test_each_adapter_keeps_its_own_optimizer_state(llm):
    llm.learn(PROMPT, "one", lora_adapter="opt_a", steps=2, lr=1e-3)
    llm.learn(PROMPT, "two", lora_adapter="opt_b", steps=3, lr=1e-3)
    llm.learn(PROMPT, "one", lora_adapter="opt_a", steps=1, lr=1e-3)
    steps = {name: {float(s["step"]) for s in llm.adapters.optimizers[name].state_dict()["state"].values()}
             for name in ("opt_a", "opt_b")}
    assert steps == {"opt_a": {3.0}, "opt_b": {3.0}}
    a_params = set(map(id, llm.adapters.params("opt_a").values()))
    b_params = set(map(id, llm.adapters.params("opt_b").values()))
    opt_a = {id(p) for g in llm.adapters.optimizers["opt_a"].param_groups for p in g["params"]}
    assert opt_a == a_params and not opt_a & b_params


def test_save_and_load_round_trip_in_peft_format(llm, tiny_dir, tmp_path):
    llm.learn(PROMPT, ANSWER, lora_adapter="saved", steps=6, lr=2e-2)
    expected = llm.logits(PROMPT, lora_adapter="saved")
    out = llm.save_adapter("saved", tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    keys = load_file(out / "adapter_model.safetensors")
    assert keys and all("language_model" in k and "lora_" in k for k in keys)

    fresh = OnlineLLM(tiny_dir, temperature=0.0, max_tokens=6, attn_implementation="sdpa")
    fresh.load_adapter(out, "restored")
    torch.testing.assert_close(fresh.logits(PROMPT, lora_adapter="restored"), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fresh.logits(PROMPT), llm.logits(PROMPT), atol=1e-6, rtol=0)
    # the optimizer state came along: one more step here and in the original gives the same adapter
    assert (out / "optimizer.safetensors").is_file()
    fresh.learn(PROMPT, "a golden dog", lora_adapter="restored", steps=2, lr=1e-2)
    llm.learn(PROMPT, "a golden dog", lora_adapter="saved", steps=2, lr=1e-2)
    resumed = {n.replace(".restored.", "."): p for n, p in fresh.adapters.params("restored").items()}
    for n, p in llm.adapters.params("saved").items():
        torch.testing.assert_close(resumed[n.replace(".saved.", ".")], p, atol=1e-6, rtol=0)
    with pytest.raises(FileExistsError, match="already exists"):
        llm.save_adapter("saved", out)


def test_a_failing_step_loses_no_adapter_state(llm, monkeypatch):
    llm.learn(PROMPT, ANSWER, lora_adapter="fragile", steps=2, lr=1e-2)
    weights, opt_state = llm.adapters.snapshot("fragile")
    logits = llm.logits(PROMPT, lora_adapter="fragile")
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated failure in the second step")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", flaky)
    with pytest.raises(RuntimeError, match="simulated failure"):
        llm.learn(PROMPT, "something else", lora_adapter="fragile", steps=3, lr=1e-2)
    after, after_opt = llm.adapters.snapshot("fragile")
    assert all(torch.equal(after[n], w) for n, w in weights.items())
    assert [float(s["step"]) for s in after_opt["state"].values()] == [float(s["step"]) for s in opt_state["state"].values()]
    torch.testing.assert_close(llm.logits(PROMPT, lora_adapter="fragile"), logits, atol=0, rtol=0)

    # a new adapter whose first learn fails is not left behind half-made
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="simulated failure"):
        llm.learn(PROMPT, ANSWER, lora_adapter="stillborn", steps=2, lr=1e-2)
    assert "stillborn" not in llm.lora_adapters


def test_non_finite_loss_is_refused_and_rolled_back(llm, monkeypatch):
    llm.learn(PROMPT, ANSWER, lora_adapter="nan_guard", steps=1, lr=1e-3)
    weights, _ = llm.adapters.snapshot("nan_guard")
    model = llm.hf_model.model
    real_forward = type(model).forward

    def nan_forward(self, *a, **k):
        out = real_forward(self, *a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(type(model), "forward", nan_forward)
    with pytest.raises(FloatingPointError, match="adapter 'nan_guard', step 0: loss is nan"):
        llm.learn(PROMPT, ANSWER, lora_adapter="nan_guard", steps=2, lr=1e-3)
    monkeypatch.undo()
    after, _ = llm.adapters.snapshot("nan_guard")
    assert all(torch.equal(after[n], w) for n, w in weights.items())


def test_bfloat16_base_learns_float32_adapters(tiny_dir):
    half = OnlineLLM(tiny_dir, dtype="bfloat16", temperature=0.0, max_tokens=4, lora_rank=4,
                     attn_implementation="sdpa")
    assert half.hf_model.dtype == torch.bfloat16 == half.hf_model.model.lm_head.weight.dtype
    losses = half.learn(PROMPT, ANSWER, lora_adapter="bf16", steps=4, lr=2e-2)
    assert losses[-1] < losses[0]
    assert {p.dtype for p in half.adapters.params("bf16").values()} == {torch.float32}
    assert isinstance(half.generate(PROMPT, lora_adapter="bf16"), str)
