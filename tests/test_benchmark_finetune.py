"""`python -m benchmarks finetune` on a tiny random Llama saved to a temporary directory: the result files and
their structure, and both sides' first-step losses agreeing, in the timing process and in the memory ones."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.hf_models import tiny_hf_model

from jaxmodels_benchmarks import harness
from jaxmodels_benchmarks.suites import _finetune_sides as sides
from jaxmodels_benchmarks.suites import finetune


@pytest.fixture
def model_dir(tmp_path):
    tiny_hf_model("llama", tmp_path / "model", num_key_value_heads=2)
    return tmp_path / "model"


def test_finetune_writes_its_table_chart_and_memory_with_agreeing_losses(model_dir, tmp_path):
    harness.set_results_dir(tmp_path / "results")
    try:
        finetune.main(["--model", str(model_dir), "--batch", "2", "--seq-len", "13", "--runs", "1", "--dtypes",
                       "float32", "--remat", "", "--memory-steps", "1"])
    finally:
        harness.set_results_dir(None)
    payload = json.loads((tmp_path / "results" / "finetune.json").read_text())
    assert (tmp_path / "results" / "finetune.png").stat().st_size > 0
    assert "| case | ours tok/s | transformers tok/s | ours / transformers |" in (
        tmp_path / "results" / "finetune.md").read_text()
    [row] = payload["rows"]
    assert row["case"] == "float32" and row["ours tok/s"] > 0 and row["transformers tok/s"] > 0
    assert row["ours / transformers"] == pytest.approx(row["ours tok/s"] / row["transformers tok/s"])
    case = payload["results"]["cases"]["float32"]
    losses = []
    for who in ("ours", "transformers"):
        assert set(case[who]["times"]) == {"forward", "forward+backward", "step"}
        memory = case["memory"][who]
        assert not memory["other_framework_loaded"]
        assert memory["peak_bytes"] >= memory["training_peak_bytes"] > memory["imports_bytes"] > 0
        losses += [case[who]["first_loss"], memory["first_loss"]]
    assert max(losses) - min(losses) <= 1e-5 * losses[0], losses


def test_bfloat16_with_activation_checkpointing_takes_nearly_the_same_first_loss(model_dir):
    args = argparse.Namespace(model=str(model_dir), runs=1)
    result = finetune.speed(args, "bfloat16", True, sides.batch_ids(53, 2, 13))
    ours, theirs = result["ours"]["first_loss"], result["transformers"]["first_loss"]
    assert set(result["ours"]["times"]) == set(result["transformers"]["times"]) == {"step"}
    assert ours == pytest.approx(theirs, rel=2e-2)  # ours computes all in bfloat16, autocast only its matmuls
