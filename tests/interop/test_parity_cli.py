"""jaxmodels-parity (interop/parity.py) on a tiny random Llama with a tiny tokenizer; its bad-input line."""

import json

import numpy as np
import pytest

from tests.hf_models import tiny_hf_model
from tests.test_tokenizer import CHAT, save_hf

from jaxmodels_interop import parity


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    save_hf(path, eos_token="<|im_end|>", chat_template=CHAT)
    tiny_hf_model("llama", path, vocab_size=311, max_position_embeddings=2048)
    return path


def test_measure_reports_errors_ratios_and_greedy_agreement(tiny_dir):
    prompts = {"chat": "<|im_start|>user\nthe quick brown fox<|im_end|>\n", "prose": "héllo wörld " * 40}
    rows = parity.measure(tiny_dir, new_tokens=6, prompts=prompts, orderings=3)
    assert [r["prompt"] for r in rows] == ["chat", "prose"]
    for r in rows:
        assert r["tokens"] > 5 and r["reference"] == "float64" and r["orderings"] == 3
        errors = r["transformers_f32_errors"] + r["ours_f32_errors"]
        assert len(errors) == 6 and all(0 < e < 1e-4 for e in errors)
        assert len(set(r["ours_f32_errors"])) > 1  # the orderings round differently
        assert r["transformers_f32_error"] == np.median(r["transformers_f32_errors"])
        assert r["ratio"] == pytest.approx(r["ours_f32_error"] / r["transformers_f32_error"])
        assert r["ratio_natural_order"] == pytest.approx(r["ours_f32_errors"][0] / r["transformers_f32_errors"][0])
        assert r["ours_vs_transformers"] < 1e-4
        assert r["greedy_identical"] and 1 <= r["greedy_tokens"] <= 6
    assert "| chat |" in parity.table(rows)


def test_builtin_prompts_use_the_chat_template_and_include_long_prose(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    prompts = parity.builtin_prompts(tok)
    assert len(prompts) == 5
    assert prompts["chat-capital"].startswith("<|im_start|>user\nWhat is the capital of France?")
    assert sum(len(tok(p)["input_ids"]) >= 300 for p in prompts.values()) >= 2


def test_cli_writes_json_and_fails_on_a_ratio_limit(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(parity, "builtin_prompts", lambda tok: {"p": "the lazy dog " * 8})
    out = tmp_path / "parity.json"
    assert parity.main([str(tiny_dir), "--new-tokens", "3", "--orderings", "2", "--json", str(out)]) in (0, 1)
    rows = json.loads(out.read_text())
    assert rows[0]["prompt"] == "p"
    assert parity.main([str(tiny_dir), "--new-tokens", "3", "--orderings", "1", "--max-ratio", "0"]) == 1
    assert "worst error ratio" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [([], "no config.json"), (["--orderings", "0"], "--orderings must be >= 1")])
def test_bad_input_is_one_error_line(tiny_dir, tmp_path, capsys, args, message):
    where = tmp_path if not args else tiny_dir
    assert parity.main([str(where), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
