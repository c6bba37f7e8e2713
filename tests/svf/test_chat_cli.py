"""`python -m training.svf train` on a chat checkpoint: a chat domain through the tokenizer's template, the LoRA
baseline, a task file, and a NaN reward that stops the run with one error line and the last good state kept."""

import json

import pytest

from jaxmodels import lora
from jaxmodels.pretrained import from_pretrained
from jaxmodels_training import svf as svf_cli
from tests.lm_fixtures import tiny_model_dir


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("chat") / "model", max_position_embeddings=256)


def argv(model, out, *extra):
    return ["train", "--model", str(model), "--tokenizer", str(model), "--steps", "2", "--batch-size", "2",
            "--n-train", "4", "--n-valid", "2", "--eval-every", "1", "--max-new-tokens", "3", "--out", str(out),
            *extra]


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_lora_baseline_on_a_chat_domain(chat_model, tmp_path):
    out = tmp_path / "lora"
    svf_cli.main(argv(chat_model, out, "--task", "sentiment", "--method", "lora", "--lora-rank", "2"))
    adapters, config = lora.load(out / "lora", from_pretrained(chat_model))
    assert config.rank == 2 and set(config.targets) == {"gate_proj", "up_proj", "down_proj"}
    assert [r["split"] for r in records(out)] == ["valid", "train", "valid", "train", "valid"]
    assert (out / "metrics.png").is_file() and not (out / "expert.safetensors").exists()


def test_a_task_file_trains_an_expert(chat_model, tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                             for i in range(40)))
    out = tmp_path / "file"
    svf_cli.main(argv(chat_model, out, "--task-file", str(tasks), "--svd-cache", str(tmp_path / "svd")))
    assert (out / "expert.safetensors").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": ""}\n')
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        svf_cli.main(argv(chat_model, tmp_path / "bad", "--task-file", str(bad)))
    assert err.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: task file {bad}: 1 unanswerable item(s): line 1: ")
    with pytest.raises(SystemExit) as err:
        svf_cli.main(argv(chat_model, tmp_path / "none"))
    assert err.value.code == 2 and "give one of --task NAME or --task-file JSONL" in capsys.readouterr().err


def test_a_nan_reward_stops_with_the_last_good_state(chat_model, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    calls = {"n": 0}
    real = svf_cli.strict_match

    def flaky(reply, answer):  # finite for the validation pass and the first step, NaN from then on
        calls["n"] += 1
        return real(reply, answer) if calls["n"] <= 6 else float("nan")

    monkeypatch.setattr(svf_cli, "strict_match", flaky)
    args = argv(chat_model, out, "--task", "letters", "--svd-cache", str(tmp_path / "svd"))
    with pytest.raises(SystemExit) as err:
        svf_cli.main(args)
    msg = str(err.value)
    assert err.value.code == 2 and msg.startswith("error: the reward function of task 'letters' returned nan for 2 of 2 samples")
    assert "stopped at step 2 with the last good state saved in" in msg and "(step 1; --resume continues" in msg
    assert "\n" not in msg
    assert (out / "checkpoints").is_dir() and not (out / "expert.safetensors").exists()
    monkeypatch.setattr(svf_cli, "strict_match", real)
    svf_cli.main(args + ["--resume"])
    assert [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2]
    assert (out / "expert.safetensors").is_file()


def test_chat_tasks_need_a_chat_template(tmp_path):
    from jaxmodels import Hyformer, HyformerConfig

    Hyformer.from_config(HyformerConfig.tiny(vocab_size=260, max_seq_len=24), seed=1).save_pretrained(tmp_path / "m")
    with pytest.raises(SystemExit, match="chat tasks are asked through the tokenizer's chat template; bytes has none"):
        svf_cli.main(["train", "--model", str(tmp_path / "m"), "--task", "letters", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
