"""HyformerConfig: presets, JSON round trip, strict validation."""

import json

import pytest

from jaxmodels import HyformerConfig


def test_json_round_trip(tmp_path):
    cfg = HyformerConfig.small(num_prediction_tasks=2, prediction_task_type="multilabel")
    cfg.to_json(tmp_path / "c.json")
    assert HyformerConfig.from_json(tmp_path / "c.json") == cfg
    assert HyformerConfig.from_pretrained(tmp_path / "c.json") == cfg
    assert cfg.to_dict()["model_type"] == "hyformer"


def test_reads_the_original_config_file(tmp_path):
    """The original's configs/hyformer/base.json has no model_type."""
    original = {"vocab_size": 71, "d_model": 512, "n_heads": 8, "n_layers": 1, "max_seq_len": 128,
                "attn_dropout": 0.0, "resid_dropout": 0.0, "eps": 1e-6}
    (tmp_path / "config.json").write_text(json.dumps(original))
    cfg = HyformerConfig.from_pretrained(tmp_path)
    assert (cfg.vocab_size, cfg.n_layers, cfg.head_dim) == (71, 1, 64)


@pytest.mark.parametrize("data, message", [
    ({"vocab_size": 10, "d_modle": 8}, r"unknown HyformerConfig fields \['d_modle'\]; valid fields are"),
    ({"d_model": 8}, r"missing required HyformerConfig fields \['vocab_size'\]"),
    ({"vocab_size": 10, "model_type": "llama"}, "model_type is 'llama', expected 'hyformer'"),
    ({"vocab_size": 10, "d_model": 30, "n_heads": 4}, "d_model=30 must be divisible by n_heads=4"),
    ({"vocab_size": 10, "d_model": 12, "n_heads": 4}, "head dim d_model/n_heads=3 must be even for RoPE"),
    ({"vocab_size": 0}, "HyformerConfig.vocab_size must be a positive integer, got 0"),
    ({"vocab_size": 10, "attn_dropout": 1.5}, r"attn_dropout must lie in \[0, 1\), got 1.5"),
    ({"vocab_size": 10, "prediction_task_type": "ranking"}, "prediction_task_type must be one of"),
])
def test_bad_config_files(tmp_path, data, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as e:
        HyformerConfig.from_json(path)
    if "fields" in message:
        assert str(path) in str(e.value)


def test_unreadable_config(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        HyformerConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        HyformerConfig.from_json(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="unknown Hyformer preset 'huge'"):
        HyformerConfig.preset("huge")
