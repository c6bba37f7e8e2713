"""The seed's BERT example runs offline: a tiny random BertModel's [CLS] vector feeds V.V.A.L.T."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vvalt_bert.py"


def test_bert_cls_feeds_vvalt(capsys):
    pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")
    spec = importlib.util.spec_from_file_location("vvalt_bert_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--hidden", "32", "--frame", "11", "--task-dim", "5"])
    assert result["cls"].shape == (3, 32) and result["output"].shape == (3, 11)
    assert np.all(np.abs(result["output"]) <= 1.0)
    assert result["max_abs_diff"] < 1e-5
    assert result["trace"].batch_size == 3
    assert "=== V.V.A.L.T Reasoning Trace ===" in capsys.readouterr().out
