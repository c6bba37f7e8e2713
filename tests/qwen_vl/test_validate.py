"""The validation command against independent paths, the Qwen2 checkpoint it writes, and the CLI."""

import json

import torch
from safetensors.torch import load_file

from jaxmodels_interop.qwen_vl.cli import main as cli
from jaxmodels_interop.qwen_vl.validate import qwen2_checkpoint, validate


def test_validate_passes_against_transformers_and_flax(llm):
    # the runner carries a trained adapter: validation checks its base path (adapters disabled) all the same
    llm.learn("Hi", "there", lora_adapter="ghost", steps=2, lr=5e-2)
    rows = validate(llm, image="synthetic", max_tokens=6)
    by_check = {r["check"]: r for r in rows}
    assert set(by_check) == {"runner vs transformers (text)", "runner vs transformers (image)",
                             "runner vs Flax Qwen2 (logits, prompt)", "runner vs Flax Qwen2 (logits, 300-token prompt)",
                             "runner vs Flax Qwen2 (greedy)"}
    assert all(r["ok"] for r in rows), rows
    # mrope with three equal position streams is ordinary RoPE: Flax (plain RoPE) agrees over 300 positions
    assert by_check["runner vs Flax Qwen2 (logits, 300-token prompt)"]["max abs dlogits"] < 1e-4
    assert by_check["runner vs transformers (image)"]["prompt tokens"] > by_check["runner vs transformers (text)"][
        "prompt tokens"]


def test_validate_notices_a_runner_that_differs(tiny_dir):
    from jaxmodels_interop.qwen_vl import OnlineLLM

    broken = OnlineLLM(tiny_dir, temperature=0.0, attn_implementation="eager")
    with torch.no_grad():
        broken.hf_model.model.model.language_model.layers[1].mlp.down_proj.weight.mul_(1.01)
    rows = validate(broken, image=None, max_tokens=4, flax=False)
    assert not rows[0]["ok"] and 1e-4 < rows[0]["max abs dlogits"] < float("inf")


def test_qwen2_checkpoint_keys(llm, tmp_path):
    path = qwen2_checkpoint(llm.hf_model, tmp_path / "qwen2")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "rope_scaling" not in config
    keys = set(load_file(path / "model.safetensors"))
    assert "lm_head.weight" in keys and "model.embed_tokens.weight" in keys
    assert not any("visual" in k or "language_model" in k for k in keys)
    text = {"model." + n.removeprefix("model.language_model.").replace(".base_layer", "")
            for n, _ in llm.hf_model.model.named_parameters()
            if n.startswith("model.language_model.") and "lora_" not in n}
    assert keys == text | {"lm_head.weight"}


def test_cli_generate_learn_validate(tiny_dir, tmp_path, capsys):
    assert cli(["generate", str(tiny_dir), "Hi", "--attn", "eager", "--max-tokens", "4"]) == 0
    out = capsys.readouterr()
    assert "# attention: eager as requested; dtype float32 on cpu" in out.err
    assert cli(["learn", str(tiny_dir), "Who is good?", "a golden retriever", "--out", str(tmp_path / "ad"),
                "--steps", "16", "--lr", "0.02", "--attn", "sdpa", "--lora-rank", "4", "--max-tokens", "8"]) == 0
    losses = json.loads(capsys.readouterr().out.splitlines()[0])["losses"]
    assert len(losses) == 16 and losses[-1] < losses[0]
    assert cli(["generate", str(tiny_dir), "Who is good?", "--adapter-dir", str(tmp_path / "ad"), "--max-tokens", "8",
                "--stream"]) == 0
    assert capsys.readouterr().out.strip() == "a golden retriever"
    assert cli(["validate", str(tiny_dir), "--no-flax", "--json", "--max-tokens", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["ok"] for r in rows)
