"""SVF bad input: damaged expert files (manifest entries without a shape, strings for matrices, NaN or integer z)
are refused naming the file and the matrix, the adapt CLI says so in one error line with status 2, and an SVD
cache whose factors do not reproduce the weights is rebuilt instead of silently patching the wrong matrices."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from jaxmodels import LlamaForCausalLM, Qwen2Config
from jaxmodels.svf import ExpertMismatchError, SVFWrapper, decompose
from jaxmodels_training import svf as svf_cli

NAME = "model.layers.0.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def model():
    cfg = Qwen2Config(vocab_size=260, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


def rewrite(path, out, *, manifest=None, tensors=None):
    """A copy of the expert at `path` with its manifest and/or tensors changed by the given functions."""
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["manifest"])
    z = load_file(str(path))
    save_file(tensors(z) if tensors else z, str(out),
              metadata={"manifest": json.dumps(manifest(meta) if manifest else meta)})
    return out


@pytest.mark.parametrize("damage, message", [
    (dict(manifest=lambda m: {**m, "matrices": {**m["matrices"], NAME: {"rank": 24}}}),
     rf"manifest entry matrices\['{NAME}'\] is {{'rank': 24}}; expected {{\"shape\": \[rows, cols\], \"rank\": r}}"),
    (dict(manifest=lambda m: {**m, "matrices": {**m["matrices"], NAME: "24x40"}}),
     rf"manifest entry matrices\['{NAME}'\] is '24x40'"),
    (dict(tensors=lambda z: {**z, NAME: np.full_like(z[NAME], np.nan)}),
     rf"z of {NAME} holds 24 non-finite value\(s\) \(NaN or inf\)"),
    (dict(tensors=lambda z: {**z, NAME: np.ones(24, np.int32)}),
     rf"z of {NAME} is int32 of shape \[24\]; expected a float vector \[rank\]"),
], ids=["no-shape", "string-entry", "nan-z", "integer-z"])
def test_a_damaged_expert_is_refused(model, tmp_path, damage, message):
    good = SVFWrapper(model).save(tmp_path / "good.safetensors")
    bad = rewrite(good, tmp_path / "bad.safetensors", **damage)
    with pytest.raises(ExpertMismatchError, match=rf"SVF expert {bad}: {message}"):
        SVFWrapper(model).load(bad)


def test_the_adapt_cli_refuses_a_damaged_expert_in_one_line(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    good = SVFWrapper(model).save(tmp_path / "good.safetensors")
    bad = rewrite(good, tmp_path / "bad.safetensors", tensors=lambda z: {**z, NAME: np.full_like(z[NAME], np.nan)})
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as err:
        svf_cli.main(["adapt", "--model", str(tmp_path / "model"), "--experts", f"arith={bad}",
                      "--strategies", "expert", "--json", str(tmp_path / "out.json")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: SVF expert {bad}: z of {NAME} holds 24 non-finite") and "Traceback" not in \
        "\n".join(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_damaged_svd_cache_is_rebuilt(model, tmp_path):
    fresh = decompose(model, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("svd-*.safetensors")
    tensors = load_file(str(cache))
    with safe_open(str(cache), framework="numpy") as f:
        meta = f.metadata()
    key = f"{fresh.keys[0]}.s"
    tensors[key] = np.random.default_rng(0).random(tensors[key].shape).astype(np.float32)  # right shape, wrong values
    save_file(tensors, str(cache), metadata=meta)
    with pytest.warns(UserWarning, match=r"SVD cache .* does not reproduce this model's weights .*recomputing it"):
        again = decompose(model, cache_dir=tmp_path)
    for k in fresh.keys:
        np.testing.assert_array_equal(np.asarray(again.components[k].s), np.asarray(fresh.components[k].s))
    np.testing.assert_array_equal(load_file(str(cache))[key], np.asarray(fresh.components[fresh.keys[0]].s))
