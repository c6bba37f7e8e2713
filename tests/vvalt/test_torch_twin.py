"""The PyTorch twin: same weights (seed and converted), parity <= 1e-5, save/load, Auto classes, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
from safetensors.numpy import load_file
from transformers import AutoModel, AutoModelForSequenceClassification

from jaxmodels_interop import vvalt_convert as convert
from jaxmodels_interop import vvalt_torch as twin
from jaxmodels.vvalt import VVALTForRegression, VVALTForSequenceClassification, VVALTModel, original_weights
from tests.vvalt.helpers import TINY, adjacency, inputs

TWIN_CONFIG = dict(input_dim=23, frame_dim=13, task_dim=7, hidden_dim=29, num_labels=3)


def _run_torch(model, x, t, adj=None, labels=None):
    with torch.no_grad():
        return model(torch.from_numpy(x), task_vector=torch.from_numpy(t),
                     graph_adj=None if adj is None else torch.from_numpy(adj),
                     labels=None if labels is None else torch.from_numpy(labels))


def test_twin_initialises_to_the_original_weights():
    model = twin.VVALTModel(twin.VVALTConfig(**TWIN_CONFIG))
    ours = original_weights(TINY)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours[key.replace("_", ".", 1)].astype(np.float32), err_msg=key)


@pytest.mark.parametrize("cls", [VVALTModel, VVALTForSequenceClassification, VVALTForRegression])
def test_parity_through_conversion(tmp_path, cls):
    model = cls(TINY)
    x, t = (a.astype(np.float32) for a in inputs(TINY, batch=5))
    adj = adjacency(TINY.frame_dim).astype(np.float32)
    convert.export_hf(model, tmp_path / "hf")
    loaded = AutoModel.from_pretrained(tmp_path / "hf") if cls is VVALTModel else \
        getattr(twin, cls.__name__).from_pretrained(tmp_path / "hf")
    ours, theirs = model(x, t, adj), _run_torch(loaded, x, t, adj)
    for a, b in [(ours.last_hidden_state, theirs.last_hidden_state), (ours.final_output, theirs.final_output),
                 (ours.attentions[0], theirs.attentions[0]), (ours.hidden_states[2], theirs.hidden_states[2])]:
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=0, atol=1e-5)
    # exactly the twin's key set, and back to Flax bit for bit
    assert set(load_file(str(tmp_path / "hf" / "model.safetensors"))) == set(loaded.state_dict())
    back = convert.load_hf(tmp_path / "hf")
    assert type(back) is cls
    np.testing.assert_array_equal(np.asarray(back(x, t).last_hidden_state), np.asarray(model(x, t).last_hidden_state))


def test_twin_save_pretrained_round_trip_and_losses(tmp_path):
    model = twin.VVALTForSequenceClassification(twin.VVALTConfig(**TWIN_CONFIG, seed=9))
    x, t = (a.astype(np.float32) for a in inputs(TINY, batch=4))
    y = np.array([0, 1, 2, 1])
    model.save_pretrained(tmp_path / "t")
    names = set(load_file(str(tmp_path / "t" / "model.safetensors")))
    assert {"vvalt.attention_W_output", "vvalt.projector_W_topology", "vvalt.refiner_b2"} <= names
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "t")
    a, b = _run_torch(model, x, t, labels=y), _run_torch(again, x, t, labels=y)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    flax_model = convert.load_hf(tmp_path / "t")
    ours = flax_model(x, t, labels=y)
    np.testing.assert_allclose(float(ours.loss), float(a.loss), rtol=1e-5)
    loss = model(torch.from_numpy(x), task_vector=torch.from_numpy(t), labels=torch.from_numpy(y)).loss
    loss.backward()
    assert model.vvalt.encoder_W_semantic.grad is not None and model.vvalt.encoder_W_semantic.grad.abs().sum() > 0


def test_trust_remote_code_export_loads_with_torch_and_transformers_only(tmp_path):
    convert.export_hf(VVALTForSequenceClassification(TINY), tmp_path / "remote")
    cfg = json.loads((tmp_path / "remote" / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForSequenceClassification"] == "modeling_vvalt.VVALTForSequenceClassification"
    x, t = (a.astype(np.float32) for a in inputs(TINY, batch=2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    # A fresh interpreter that never imports jaxmodels or interop: only the shipped modeling_vvalt.py.
    script = (
        "import sys, numpy as np, torch\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"d = {str(tmp_path)!r}\n"
        "m = AutoModelForSequenceClassification.from_pretrained(d + '/remote', trust_remote_code=True)\n"
        "assert 'interop' not in sys.modules and 'jaxmodels' not in sys.modules\n"
        "x, t = torch.from_numpy(np.load(d + '/x.npy')), torch.from_numpy(np.load(d + '/t.npy'))\n"
        "np.save(d + '/y.npy', m(x, task_vector=t).logits.detach().numpy())\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               np.asarray(VVALTForSequenceClassification(TINY)(x, t).logits), atol=1e-5)


def test_twin_errors():
    model = twin.VVALTForSequenceClassification(twin.VVALTConfig(**TWIN_CONFIG))
    x, t = (torch.from_numpy(a.astype(np.float32)) for a in inputs(TINY, batch=2))
    with pytest.raises(ValueError, match="task_vector is required"):
        model(x)
    with pytest.raises(TypeError, match="labels must be integer class ids"):
        model(x, task_vector=t, labels=torch.zeros(2))
    with pytest.raises(ValueError, match=r"outside \[0, num_labels=3\)"):
        model(x, task_vector=t, labels=torch.tensor([0, 5]))


def test_conversion_refuses_unknown_config_and_bad_weights(tmp_path):
    from safetensors.numpy import save_file

    from jaxmodels.vvalt.convert import read_hf_config

    # The twin reads our fields only: anything else is accepted, and reported as ignored.
    config, ignored = read_hf_config({"model_type": "vvalt", "num_heads": 2, "frame_dim": 13})
    assert config.frame_dim == 13 and ignored == {"num_heads": 2}
    with pytest.raises(ValueError, match="model_type is 'llama', expected 'vvalt'"):
        read_hf_config({"model_type": "llama"})
    convert.export_hf(VVALTModel(TINY), tmp_path / "hf")
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    tensors["lm_head.weight"] = np.zeros(2, np.float32)
    tensors["refiner_W1"] = np.zeros((3, 3), np.float32)
    del tensors["attention_b_output"]
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"(?s)3 problem\(s\).*unexpected tensor 'lm_head.weight'.*"
                                         r"'refiner_W1' has shape \(3, 3\), expected \(13, 29\).*"
                                         r"missing tensor 'attention_b_output'"):
        convert.load_hf(tmp_path / "hf")
    with pytest.raises(FileExistsError, match="already exists"):
        convert.export_hf(VVALTModel(TINY), tmp_path / "hf")


def test_cli_style_conversions_both_ways(tmp_path):
    model = VVALTForRegression(TINY.replace(num_labels=2))
    model.save_pretrained(tmp_path / "ours")
    summary = convert.to_hf(tmp_path / "ours", tmp_path / "hf", max_shard_bytes=2000)
    assert summary["model_type"] == "vvalt" and summary["tensors"] == 24
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()  # sharded on request
    assert convert.verify_dirs(tmp_path / "hf", tmp_path / "ours") < 1e-5
    convert.from_hf(tmp_path / "hf", tmp_path / "back")
    again = VVALTForRegression.from_pretrained(tmp_path / "back")
    x, t = inputs(TINY, batch=2)
    np.testing.assert_array_equal(np.asarray(again(x, t).logits), np.asarray(model(x, t).logits))
    with pytest.raises(ValueError, match="holds a VVALTForRegression checkpoint, not a VVALTModel"):
        VVALTModel.from_pretrained(tmp_path / "back")
