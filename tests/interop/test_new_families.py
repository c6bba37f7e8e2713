"""Qwen3, Gemma 3 text and Mistral checkpoints from transformers: logits within 1e-4 on a 320-token left-padded
batch, greedy generation identical to transformers' across the sliding-window boundary, export_hf, save_pretrained
and `jaxmodels-convert from-hf` / `to-hf` bit-identical, every attribute transformers reads handled, refusals."""

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
import transformers

import jaxmodels
from jaxmodels import family as families
from jaxmodels.hf.config_policy import UnsupportedConfig
from tests.hf_models import left_padded_greedy, tiny_hf_model

V, WINDOW = 97, 16
BASE = dict(vocab_size=V, hidden_size=24, intermediate_size=40, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=384, initializer_range=0.2, rms_norm_eps=1e-5)
VARIANTS = {
    # layer 1 (from max_window_layers on) slides; head_dim 10 is not hidden_size / heads
    "qwen3": dict(num_hidden_layers=2, head_dim=10, tie_word_embeddings=True, use_sliding_window=True,
                  sliding_window=WINDOW, max_window_layers=1),
    "gemma3_text": dict(num_hidden_layers=3, head_dim=10, query_pre_attn_scalar=12, sliding_window=WINDOW,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                        final_logit_softcapping=3.0, attn_logit_softcapping=2.0,
                        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e5},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e3}}),
    "mistral": dict(num_hidden_layers=2, sliding_window=WINDOW, rope_parameters={"rope_type": "default",
                                                                                  "rope_theta": 1e4}),
}
CLASSES = {"qwen3": jaxmodels.Qwen3ForCausalLM, "gemma3_text": jaxmodels.Gemma3ForCausalLM,
           "mistral": jaxmodels.MistralForCausalLM}


def build(kind, path, **change):
    """transformers' model with every norm weight perturbed (Gemma's start at 0, the others at 1), saved."""
    hf = tiny_hf_model(kind, **BASE, **{**VARIANTS[kind], **change})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    hf.save_pretrained(path)
    return hf


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, build(request.param, path), jaxmodels.from_pretrained(path), path


def _positions(mask):
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def test_logits_match_on_a_long_left_padded_batch(pair):
    kind, hf, ours, _ = pair
    assert type(ours) is CLASSES[kind]
    ids = np.random.RandomState(0).randint(0, V, (2, 320))
    mask = np.ones_like(ids)
    mask[0, :37] = 0
    with torch.no_grad():
        expected = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(_positions(mask))).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
    real = mask.astype(bool)  # a padding position's output is arbitrary in both
    np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=0)
    print(f"{kind}: max |logits difference| = {np.abs(got[real] - expected[real]).max():.2g}")


def test_greedy_generation_crosses_the_window_as_transformers_does(pair):
    """11 prompt tokens + 24 new ones: decoding passes the 16-token window, with a left-padded row."""
    _, hf, ours, _ = pair
    got, expected = left_padded_greedy(hf, ours, vocab=V, length=11, pad=3, new_tokens=24, seed=1)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got[:, 11:])) > 2  # not a degenerate continuation


def _tensors(path):
    from safetensors.numpy import load_file

    return {k: v for f in sorted(Path(path).glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def _same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def test_export_hf_is_bit_identical_and_reloads_in_transformers(pair, tmp_path):
    kind, hf, ours, src = pair
    jaxmodels.export_hf(ours, tmp_path / "out")
    _same_tensors(_tensors(tmp_path / "out"), _tensors(src))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == kind
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(again) is type(hf)
    ids = torch.tensor(np.random.RandomState(3).randint(0, V, (2, 40)))
    with torch.no_grad():
        np.testing.assert_array_equal(again(ids).logits.numpy(), hf(ids).logits.numpy())


def test_convert_cli_round_trip_is_bit_identical(pair, tmp_path, capsys):
    from jaxmodels_interop import convert_cli

    kind, _, ours, src = pair
    convert_cli.main(["from-hf", str(src), str(tmp_path / "ours")])
    convert_cli.main(["to-hf", str(tmp_path / "ours"), str(tmp_path / "back"), "--verify"])
    assert "verify: max |logits difference| =" in capsys.readouterr().out
    _same_tensors(_tensors(tmp_path / "back"), _tensors(src))
    again = jaxmodels.from_pretrained(tmp_path / "ours")
    assert type(again) is CLASSES[kind] and again.config == ours.config
    ours.save_pretrained(tmp_path / "saved")
    _same_tensors(_tensors(tmp_path / "saved"), _tensors(tmp_path / "ours"))
    assert jaxmodels.from_pretrained(tmp_path / "saved").config == ours.config


# -- configs ---------------------------------------------------------------------------------------------------

def _text_source(module: str) -> str:
    source = (Path(transformers.__file__).parent / "models" / module / f"modeling_{module}.py").read_text()
    return source.split("class Gemma3MultiModalProjector")[0]  # Gemma 3's text model (the rest is vision)


@pytest.mark.parametrize("module, model_type, also", [
    ("qwen3", "qwen3", {"hidden_act", "attention_dropout", "rope_parameters", "layer_types", "sliding_window"}),
    ("mistral", "mistral", {"hidden_act", "attention_dropout", "rope_parameters", "sliding_window"}),
    ("gemma3", "gemma3_text", {"hidden_activation", "attention_dropout", "rope_parameters", "layer_types",
                               "sliding_window", "use_bidirectional_attention", "attn_logit_softcapping"}),
])
def test_every_attribute_the_transformers_model_reads_is_handled(module, model_type, also):
    source = _text_source(module)
    read = set(re.findall(r"\bconfig\.([a-z_][a-z0-9_]*)", source))
    read |= set(re.findall(r"getattr\(config, \"([a-z_]+)\"", source))
    read |= set(re.findall(r"getattr\(self\.config, \"([a-z_]+)\"", source))
    handled = {*families.get(model_type).config_class._hf_fields, *also}
    assert read - handled - {"_attn_implementation"} == set()


@pytest.mark.parametrize("pair", ["gemma3_text"], indirect=True)
def test_gemma3_attention_softcapping_changes_nothing_in_transformers(pair):
    """transformers' Gemma 3 stores attn_logit_softcapping and never applies it: accepted, reported, unused."""
    _, hf, _, src = pair
    _, ignored = jaxmodels.Gemma3Config.read_hf_config(json.loads((src / "config.json").read_text()))
    assert ignored["attn_logit_softcapping"] == 2.0
    ids = torch.tensor(np.random.RandomState(4).randint(0, V, (1, 30)))
    with torch.no_grad():
        capped = hf(ids).logits
        hf.config.attn_logit_softcapping = None
        uncapped = hf(ids).logits
        hf.config.attn_logit_softcapping = 2.0
    assert torch.equal(capped, uncapped)


def test_old_gemma3_config_keys_are_read_as_transformers_reads_them():
    """Hub Gemma 3 configs predate rope_parameters and layer_types: rope_theta + rope_scaling (global layers),
    rope_local_base_freq (local layers), sliding_window_pattern (every 6th layer global)."""
    old = {"model_type": "gemma3_text", **BASE, "num_hidden_layers": 7, "head_dim": 8, "rope_theta": 1e6,
           "rope_local_base_freq": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
           "sliding_window": 32, "sliding_window_pattern": 6, "query_pre_attn_scalar": 8}
    ours, _ = jaxmodels.Gemma3Config.read_hf_config(old)
    theirs = transformers.Gemma3TextConfig(**{k: v for k, v in old.items() if k != "model_type"})
    assert list(ours.layer_types) == theirs.layer_types
    assert ours.rope_theta == theirs.rope_parameters["full_attention"]["rope_theta"]
    assert dict(ours.rope_scaling) == {"rope_type": "linear", "factor": 8.0}
    assert ours.local_rope_theta == theirs.rope_parameters["sliding_attention"]["rope_theta"]
    assert ours.local_rope_scaling is None


@pytest.mark.parametrize("kind, change, message", [
    ("qwen3", dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "rope type 'yarn'"),
    ("qwen3", dict(layer_types=["full_attention", "chunked_attention"]), r"layer_types \['chunked_attention'\]"),
    ("qwen3", dict(use_sliding_window=False, sliding_window=16, layer_types=["full_attention", "sliding_attention"]),
     "sliding_window=None with sliding_attention layers"),
    ("mistral", dict(hidden_act="gelu"), "unsupported mistral config attributes: hidden_act='gelu'"),
    ("gemma3_text", dict(use_bidirectional_attention=True), "use_bidirectional_attention=True"),
    ("gemma3_text", dict(hidden_activation="gelu"), "hidden_activation='gelu'"),
    ("gemma3_text", dict(rope_parameters={"full_attention": {"rope_type": "dynamic", "factor": 2.0},
                                          "sliding_attention": {"rope_type": "default"}}),
     "rope_parameters.full_attention: rope type 'dynamic'"),
])
def test_unimplemented_values_are_refused_by_name(tmp_path, capsys, kind, change, message):
    from jaxmodels_interop import convert_cli

    cfg = {**families.get(kind).preset("tiny").to_hf_config(), **change}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedConfig, match=message):
        jaxmodels.from_pretrained(tmp_path / "src")
    with pytest.raises(SystemExit) as e:
        convert_cli.main(["from-hf", str(tmp_path / "src"), str(tmp_path / "dst")])
    assert e.value.code == 2 and not (tmp_path / "dst").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0])
