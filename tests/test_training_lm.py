"""training.lm end to end on tiny models and data: the assistant mask, learning, exact resume, gradient
accumulation, LoRA (frozen base, adapters-only optimizer state, exports), GGUF, bad input. Meshes and several
processes: tests/test_training_lm_dist.py."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from flax import nnx

from tests import lm_fixtures as F

pytest.importorskip("transformers")

from jaxmodels_training import lm, lm_data  # noqa: E402

COMMON = F.COMMON_ARGS
MESSAGES = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": "capital of peru?"},
            {"role": "assistant", "content": "lima"}, {"role": "user", "content": "and cuba?"},
            {"role": "assistant", "content": "havana"}]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module's runs, so that a run repeating another's program (the
    resumed runs) loads it instead of compiling it again; the previous setting is restored afterwards."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    from jaxmodels import compilation_cache as cache

    before = jax.config.jax_compilation_cache_dir
    cache.enable(tmp_path_factory.mktemp("xla"))
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    jax_cache.reset_cache()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return {"root": root, "llama": F.tiny_model_dir(root / "llama"),
            "chat": F.write_jsonl(root / "chat.jsonl", F.conversations(48))}


def run(work, out, *extra, model=None):
    argv = ["--model", str(model or work["llama"]), "--chat", str(work["chat"]), "--out", str(out), *COMMON, *extra]
    return lm.train(lm.parse_args(argv))


def losses(outcome):
    return [loss for _, loss in outcome.history["train"]]


read_metrics = F.read_metrics


# -- the assistant-token mask --------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", [F.PLAIN, F.MARKED], ids=["rendered-prefixes", "generation-markers"])
def test_assistant_mask_on_a_known_rendering(template):
    hf = F.tokenizer(template)
    renderer = lm_data.ChatRenderer(hf, "toy")
    assert renderer.marked == (template is F.MARKED)
    ids, mask = renderer.encode(MESSAGES)
    assert ids.tolist() == hf.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    pieces = [hf.decode([i]) for i in ids[mask]]
    assert "".join(pieces) == "lima<|im_end|>\nhavana<|im_end|>\n"
    # exactly the replies and their end-of-turn tokens: nothing of the prompts, the roles or the system turn
    assert mask.sum() == len(hf("lima<|im_end|>\nhavana<|im_end|>\n", add_special_tokens=False)["input_ids"])


def test_mask_finds_a_token_merged_across_the_reply_boundary():
    spaced = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")
    hf = F.tokenizer(spaced)
    ids, mask = lm_data.ChatRenderer(hf, "toy").encode(MESSAGES[1:3])
    assert hf.decode(ids[mask]) == " lima\n"  # " lima" starts at the space after the generation prompt


def test_a_template_that_is_not_prefix_consistent_is_refused(tmp_path):
    counting = F.PLAIN + "{{ messages | length }}"  # the count at the end changes with every message
    path = F.write_jsonl(tmp_path / "c.jsonl", [{"messages": MESSAGES}])
    with pytest.raises(lm_data.DataError, match=r"c\.jsonl:1: the chat template of toy does not render this "
                                                r"conversation prefix by prefix \(message 2\)"):
        lm_data.render_chat(path, lm_data.ChatRenderer(F.tokenizer(counting), "toy"))


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": "hi"}', r":2: invalid JSON \(Expecting ',' delimiter"),
    ('{"conversation": []}', r":2: expected an object with a \"messages\" list, got keys \['conversation'\]"),
    ('{"messages": [{"content": "hi"}]}', r":2: message 0 has no \"role\" string"),
    ('{"messages": [{"role": "user", "content": ["hi"]}]}', r":2: message 0 \(role 'user'\): \"content\" must be a "
                                                             r"string, got list"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', r":2: no assistant message"),
])
def test_chat_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": MESSAGES}) + "\n" + line + "\n")
    with pytest.raises(lm_data.DataError, match=str(path).replace(".", r"\.") + message):
        lm_data.read_chat_jsonl(path)


def test_packing_fills_rows_without_splitting_conversations():
    examples = [(np.arange(1, n + 1, dtype=np.int32), np.arange(n) >= n - 2) for n in (5, 4, 6, 3)]
    rows, notes = lm_data.chat_rows(examples, 10, 0, pack=True, vocab_size=50, name="t")
    assert rows.attention_mask.sum(1).tolist() == [9, 9]  # 5+4 | 6+3
    assert (rows.labels != lm_data.IGNORE).sum() == 8 and notes["truncated"] == 0
    padded, _ = lm_data.chat_rows(examples, 10, 0, pack=False, vocab_size=50, name="t")
    assert padded.attention_mask.sum(1).tolist() == [5, 4, 6, 3]


# -- training ------------------------------------------------------------------------------------------------------

def test_full_finetuning_learns_and_exports(work, tmp_path):
    torch = pytest.importorskip("torch")
    import transformers

    import jaxmodels
    from jaxmodels_interop.convert_cli import to_hf

    out = tmp_path / "run"
    outcome = run(work, out, "--steps", "24", "--lr", "1e-2", "--eval-every", "8", "--save-every", "12")
    train = losses(outcome)
    assert np.mean(train[-4:]) < 0.6 * np.mean(train[:4])
    evals = [loss for _, loss in outcome.history["eval"]]
    assert len(evals) == 3 and evals == sorted(evals, reverse=True)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 25))
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(rows[0])
    assert sorted(os.listdir(out / "checkpoints")) == ["12", "24"]
    assert json.loads((out / "run.json").read_text())["identity"]["model_type"] == "llama"

    ours = jaxmodels.from_pretrained(out / "model")
    to_hf(out / "model", tmp_path / "hf")
    ids = np.random.RandomState(0).randint(0, 80, (2, 17))
    with torch.no_grad():
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        expected = theirs(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids).logits), expected, atol=1e-5, rtol=0)
    assert (out / "model" / "tokenizer.json").is_file()


@pytest.fixture(scope="module")
def straight(work):
    """12 steps of 2 micro-batches of 4 rows, checkpoints every 4 steps."""
    out = work["root"] / "straight"
    return out, run(work, out, "--steps", "12", "--save-every", "4", "--grad-accum", "2", "--lr", "5e-3")


def test_resume_is_bit_exact(work, straight, tmp_path):
    out, outcome = straight
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(out), str(broken)], check=True)
    for step in ("8", "12"):  # as if the run had died after step 4
        subprocess.run(["rm", "-rf", str(broken / "checkpoints" / step)], check=True)
    subprocess.run(["rm", "-rf", str(broken / "model")], check=True)
    run(work, broken, "--steps", "12", "--save-every", "4", "--grad-accum", "2", "--lr", "5e-3", "--resume")
    assert [(r["step"], r["loss"]) for r in read_metrics(broken / "metrics.jsonl")] == \
        [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]
    from safetensors.numpy import load_file

    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (out, broken))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_grad_accum_equals_one_big_batch(work, straight, tmp_path):
    _, accumulated = straight
    big = run(work, tmp_path / "big", "--steps", "12", "--save-every", "0", "--batch-size", "8", "--lr", "5e-3")
    np.testing.assert_allclose(losses(big), losses(accumulated), rtol=2e-5)


def test_lora_trains_adapters_only_and_exports(work, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    import transformers

    import jaxmodels
    from jaxmodels import lora

    qwen = F.tiny_model_dir(work["root"] / "qwen2", kind="qwen2")
    out = tmp_path / "lora"
    outcome = run(work, out, "--steps", "16", "--lr", "5e-2", "--lora-rank", "4", "--lora-targets",
                  "q_proj,v_proj,up_proj,down_proj", "--merge", model=qwen)
    train = losses(outcome)  # the random tiny base's small logits bound what adapters alone can reach
    assert np.mean(train[-4:]) < np.mean(train[:4]) - 0.1

    base = jaxmodels.from_pretrained(qwen)
    fresh = nnx.state(base, nnx.Param)
    for (path, v), (_, w) in zip(nnx.to_flat_state(fresh), nnx.to_flat_state(outcome.frozen)):
        np.testing.assert_array_equal(np.asarray(v[...]), np.asarray(w[...]), err_msg=str(path))
    n_adapters = sum(x.size for x in jax_leaves(outcome.trainable))
    assert n_adapters == 2 * 4 * ((24 + 24) + (24 + 12) + (24 + 40) + (40 + 24))  # layers x rank x (in + out)
    moments = [x for x in jax_leaves(outcome.opt_state) if x.ndim >= 1]
    assert sum(x.size for x in moments) == 2 * n_adapters  # Adam's mu and nu, for the adapters only

    adapters, config = lora.load(out / "adapter", base)
    assert config.targets == ("down_proj", "q_proj", "up_proj", "v_proj") and config.rank == 4
    ids = np.random.RandomState(1).randint(0, 80, (2, 19))
    graphdef, params = nnx.split(base, nnx.Param)
    ours = np.asarray(nnx.merge(graphdef, lora.apply(params, adapters, config.scale))(ids).logits)
    merged = np.asarray(jaxmodels.from_pretrained(out / "model")(ids).logits)  # --merge; its export: test_lora.py
    np.testing.assert_allclose(merged, ours, atol=1e-5, rtol=0)
    with torch.no_grad():
        hf_base = transformers.AutoModelForCausalLM.from_pretrained(qwen, dtype=torch.float32)
        with_peft = peft.PeftModel.from_pretrained(hf_base, out / "peft-adapter").eval()
        np.testing.assert_allclose(with_peft(torch.tensor(ids)).logits.numpy(), ours, atol=1e-5, rtol=0)


def test_gguf_text_lora_bfloat16_merge(work, tmp_path):
    """Continued pretraining on text files of a .gguf model (its own tokenizer), LoRA on a bfloat16 base, merged
    into the float32 weights at the end."""
    from tests.test_gguf import SIZES, write_gguf

    import jaxmodels
    from jaxmodels.hf.convert import param_shapes
    from jaxmodels.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**SIZES, "num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 48,
                            "head_dim": 8})
    table, rng = jaxmodels.family.family_of(config).table, np.random.default_rng(0)
    shapes = param_shapes(nnx.eval_shape(lambda: LlamaForCausalLM(config, rngs=nnx.Rngs(0))))
    hf = {table.to_hf(k)[0]: (0.2 * rng.standard_normal(table.to_hf(k)[1].hf_shape(shape))).astype(np.float32)
          for k, shape in shapes.items()}
    write_gguf(tmp_path / "tiny.gguf", "llama", config, hf, None)
    for i in range(4):
        (tmp_path / f"doc{i}.txt").write_text("hello world, the sword!\n" * (20 + i))
    out = tmp_path / "run"
    outcome = lm.train(lm.parse_args([
        "--model", str(tmp_path / "tiny.gguf"), "--data", str(tmp_path / "doc*.txt"), "--eval-fraction", "0.25",
        "--out", str(out), *COMMON, "--seq-len", "16", "--steps", "3", "--lr", "1e-2", "--lora-rank", "2",
        "--dtype", "bfloat16", "--merge"]))
    assert all(np.isfinite(loss) for loss in losses(outcome))
    assert {str(p.dtype) for p in jax_leaves(outcome.frozen)} == {"bfloat16"}
    assert {str(p.dtype) for p in jax_leaves(outcome.trainable)} == {"float32"}
    merged = jaxmodels.from_pretrained(out / "model")
    assert {str(p.dtype) for p in jax_leaves(nnx.state(merged, nnx.Param))} == {"float32"}
    assert (out / "model" / "tokenizer.json").is_file() and (out / "peft-adapter" / "adapter_config.json").is_file()


def test_remat_flag_turns_activation_checkpointing_on(work):
    from jaxmodels_training.sharding import Placement

    args = lm.parse_args(["--model", str(work["llama"]), "--chat", str(work["chat"]), "--out", "unused", "--remat"])
    assert lm.load_model(args, Placement(None), "float32").spec.remat


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# -- bad input -----------------------------------------------------------------------------------------------------

def main_error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        lm.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_input_is_one_error_line(work, tmp_path, capsys):
    base = ["--model", str(work["llama"]), "--out", str(tmp_path / "o"), *COMMON, "--steps", "2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": MESSAGES}) + "\n{oops\n")
    assert f"{bad}:2: invalid JSON" in main_error(capsys, [*base, "--chat", str(bad)])
    chat = ["--chat", str(work["chat"])]
    line = main_error(capsys, [*base, *chat, "--lora-rank", "13", "--lora-targets", "k_proj"])
    assert "LoRA rank 13 exceeds a dimension" in line and "blocks.0.attn.k_proj.kernel (in 24, out 12)" in line
    line = main_error(capsys, [*base, *chat, "--lora-rank", "2", "--lora-targets", "q_proj,qkv"])
    assert "unknown LoRA targets ['qkv']" in line and "down_proj, gate_proj, k_proj, o_proj, q_proj" in line
    assert "needs 2 devices, found 1" in main_error(capsys, [*base, *chat, "--mesh", "fsdp=2"])
    assert not (tmp_path / "o").exists()  # nothing was written for any of them


def test_resume_with_another_model_is_refused(work, straight, capsys):
    out, _ = straight
    qwen = F.tiny_model_dir(work["root"] / "qwen2-other", kind="qwen2", seed=3)
    line = main_error(capsys, ["--model", str(qwen), "--chat", str(work["chat"]), "--out", str(out), *COMMON,
                               "--steps", "12", "--save-every", "4", "--grad-accum", "2", "--lr", "5e-3", "--resume"])
    assert "--resume: " in line and "holds a run with another configuration" in line
    assert f"model: run has '{work['llama'].resolve()}', now '{qwen.resolve()}'" in line
    assert "model_type: run has 'llama', now 'qwen2'" in line and "model_config.qkv_bias: run has False, now True" in line
