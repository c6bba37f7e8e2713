"""Every bad input from the issue: a clear error naming what was wrong, what was expected, and where."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxmodels.vvalt import VVALTConfig, VVALTForRegression, VVALTForSequenceClassification, VVALTModel
from tests.vvalt.helpers import TINY, inputs


@pytest.fixture(scope="module")
def clf():
    return VVALTForSequenceClassification(TINY)


def test_missing_task_vector(clf):
    x, _ = inputs(TINY, batch=2)
    with pytest.raises(ValueError, match=r"VVALTForSequenceClassification: task_vector is required .*\[B=2, task_dim=7\]"):
        clf(x)


@pytest.mark.parametrize("shape,msg", [((2, 22), r"inputs_embeds has shape \(2, 22\), expected \[B, input_dim=23\]"),
                                       ((23,), r"add a batch axis"),
                                       ((0, 23), r"empty batch")])
def test_wrong_input_dimension(shape, msg):
    with pytest.raises(ValueError, match=msg):
        VVALTModel(TINY)(np.zeros(shape), np.zeros(7))


@pytest.mark.parametrize("shape", [(2, 6), (3, 7), (6,)])
def test_wrong_task_dimension(shape):
    with pytest.raises(ValueError, match=r"task_vector has shape .* expected \[B=2, task_dim=7\] or \[task_dim=7\]"):
        VVALTModel(TINY)(np.zeros((2, 23)), np.zeros(shape))


def test_wrong_graph_shape():
    with pytest.raises(ValueError, match=r"graph_adj has shape \(12, 12\), expected .*\[13, 13\]"):
        VVALTModel(TINY)(np.zeros((2, 23)), np.zeros(7), np.zeros((12, 12)))


def test_non_numeric_inputs():
    with pytest.raises(TypeError, match="inputs_embeds must hold real numbers"):
        VVALTModel(TINY)(np.array([["a"] * 23]), np.zeros(7))
    with pytest.raises(TypeError, match="task_vector must hold real numbers"):
        VVALTModel(TINY)(np.zeros((1, 23)), np.zeros(7, dtype=bool))


def test_labels_outside_num_labels(clf):
    x, t = inputs(TINY, batch=3)
    with pytest.raises(ValueError, match=r"class ids \[3, 7\] outside \[0, num_labels=3\)"):
        clf(x, t, labels=np.array([0, 3, 7]))


def test_classification_labels_of_wrong_dtype_and_shape(clf):
    x, t = inputs(TINY, batch=3)
    with pytest.raises(TypeError, match="classification labels must be integer class ids, got dtype float"):
        clf(x, t, labels=np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels have shape \(3, 1\), expected \[B=3\]"):
        clf(x, t, labels=np.zeros((3, 1), dtype=np.int32))


def test_regression_labels_of_wrong_dtype_and_width():
    reg = VVALTForRegression(TINY.replace(num_labels=2))
    x, t = inputs(TINY, batch=3)
    with pytest.raises(TypeError, match="regression labels must be floating point, got dtype int"):
        reg(x, t, labels=np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"labels have shape \(3, 3\), expected \[B=3, num_labels=2\]"):
        reg(x, t, labels=np.zeros((3, 3)))


def test_labels_on_the_headless_model():
    x, t = inputs(TINY, batch=2)
    with pytest.raises(ValueError, match="VVALTModel has no head"):
        VVALTModel(TINY)(x, t, labels=np.zeros(2, np.int32))


@pytest.mark.parametrize("field,value,msg", [
    ("frame_dim", 0, "frame_dim must be a positive integer"),
    ("hidden_dim", -3, "hidden_dim must be a positive integer or None"),
    ("safe_bounds", (1.0, -1.0), "safe_bounds must be two finite numbers"),
    ("seed", -1, r"seed must be an integer in \[0, 2\*\*32\)"),
])
def test_bad_config_values(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        VVALTConfig(**{field: value})


def test_config_json_round_trip_and_unknown_fields(tmp_path):
    path = tmp_path / "config.json"
    TINY.save_pretrained(tmp_path)
    assert VVALTConfig.from_json(path) == TINY
    data = json.loads(path.read_text())
    data["num_heads"] = 4
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"unknown VVALTConfig fields \['num_heads'\]"):
        VVALTConfig.from_json(path)
    assert {f.name for f in dataclasses.fields(VVALTConfig)} >= {
        "input_dim", "frame_dim", "task_dim", "hidden_dim", "num_labels", "seed", "initializer_range", "safe_bounds"}


def test_unsupported_dtype():
    with pytest.raises(ValueError, match="must be float32 or float64, got bfloat16"):
        VVALTModel(TINY, param_dtype="bfloat16")
