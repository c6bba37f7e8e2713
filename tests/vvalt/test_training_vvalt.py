"""jaxmodels_training.vvalt end to end: task conditioning is learned, exact resume, regression, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxmodels.vvalt import VVALTForRegression, load, original_weights
from jaxmodels_training import vvalt as cli

COMMON = ["--train-size", "2048", "--eval-size", "512", "--batch-size", "64", "--lr", "3e-3", "--warmup-steps", "10",
          "--log-every", "5"]


def run(out, *extra):
    return cli.train(cli.parse_args(["--out", str(out), *COMMON, *extra]))


def read_metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_task_conditioning_is_learned(tmp_path):
    history = run(tmp_path / "clf", "--steps", "150", "--lr", "1e-2", "--eval-every", "150", "--save-every", "0")
    metrics = history["eval"][-1][1]
    # paired tasks give opposite labels to the same input: ignoring the task vector means chance (0.5)
    assert metrics["accuracy"] > 0.8, metrics
    assert abs(metrics["accuracy_shuffled_tasks"] - 0.5) < 0.1, metrics
    records = read_metrics(tmp_path / "clf" / "metrics.jsonl")
    assert {"step", "split", "loss", "lr", "tokens_per_s"} <= set(records[0])
    assert records[-1]["split"] == "eval"
    model = load(tmp_path / "clf" / "model")
    assert model.config.num_labels == 2 and model.config.input_dim == 16
    initial = original_weights(model.config)
    for key in ("encoder.W_semantic", "selector.W_task", "attention.W_output", "refiner.b2"):  # the body trained
        component, name = key.split(".")
        trained = np.asarray(getattr(getattr(model.vvalt, component), name)[...])
        assert np.max(np.abs(trained - initial[key])) > 1e-3, key


def test_resume_continues_bit_identically(tmp_path):
    straight, broken = tmp_path / "a", tmp_path / "b"
    args = ("--steps", "8", "--save-every", "4", "--eval-every", "0", "--train-size", "512")
    run(straight, *args)
    shutil.copytree(straight, broken)
    shutil.rmtree(broken / "checkpoints" / "8")  # a crash after the step-4 checkpoint
    shutil.rmtree(broken / "model")
    run(broken, *args, "--resume")
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(broken / "model" / "model.safetensors"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    key = [(r["step"], r["split"], r["loss"]) for r in read_metrics(straight / "metrics.jsonl")]
    assert key == [(r["step"], r["split"], r["loss"]) for r in read_metrics(broken / "metrics.jsonl")]


def test_regression_and_user_data(tmp_path):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((300, 16)), rng.standard_normal((300, 8))
    np.savez(tmp_path / "d.npz", inputs=x, tasks=t, labels=(x[:, :2] * t[:, :1]).astype(np.float32))
    history = run(tmp_path / "reg", "--task", "regression", "--data", str(tmp_path / "d.npz"), "--num-labels", "2",
                  "--steps", "4", "--eval-every", "4", "--batch-size", "32")
    assert all(np.isfinite(loss) for _, loss in history["train"]) and "mse" in history["eval"][-1][1]
    assert isinstance(load(tmp_path / "reg" / "model"), VVALTForRegression)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"the demo task is binary: use --num-labels 2"):
        run(tmp_path / "x", "--num-labels", "3", "--steps", "2")
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((10, 16)), tasks=np.zeros((10, 8)), labels=np.arange(10))
    with pytest.raises(ValueError, match=r"labels span \[0, 9\], outside \[0, num_labels=2\)"):
        run(tmp_path / "y", "--data", str(tmp_path / "bad.npz"), "--steps", "2")
    with pytest.raises(SystemExit):
        cli.parse_args(["--out", str(tmp_path / "z"), "--task", "ranking"])
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "run.json").write_text(json.dumps({"identity": {"task": "regression"}}))
    with pytest.raises(cli.RunDirError, match="holds another run"):
        run(tmp_path / "w", "--steps", "1", "--eval-every", "0")
    assert json.loads((tmp_path / "w" / "run.json").read_text())["identity"] == {"task": "regression"}
