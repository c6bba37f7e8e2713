"""The PyTorch Hyformer twin: float32 parity with the Flax model, caches and generate, save/load with tied
heads, trust_remote_code loading with torch + transformers only, and the original's checkpoint layout."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
from safetensors.numpy import load_file, save_file
from flax import nnx
from transformers import AutoModel, AutoModelForCausalLM

from jaxmodels_interop.hf_hyformer import HyformerConfig, HyformerForCausalLM, HyformerModel, KVCache, export_code
from jaxmodels import Hyformer
from jaxmodels import HyformerConfig as FlaxHyformerConfig
from jaxmodels.checkpoint import flat_params
from jaxmodels.hf.tables import HYFORMER

CFG = FlaxHyformerConfig.tiny(num_prediction_tasks=3)  # V 17, D 24, 4 heads (H 6), 2 layers, max_seq_len 31
B, T = 3, 13
ATOL = 1e-5
TIED = {"heads.lm.weight", "heads.mlm.weight"}


def twin_from_flax(model: Hyformer) -> HyformerForCausalLM:
    """Copies the Flax weights into a new twin through the conversion key table (jaxmodels/hf/tables.py)."""
    twin = HyformerForCausalLM(HyformerConfig(**dataclasses.asdict(model.config))).eval()
    state = {}
    for key, value in flat_params(model).items():
        name, transform = HYFORMER.to_hf(key)
        state[name] = torch.from_numpy(np.array(transform.to_hf(np.asarray(value)), order="C"))
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert set(missing) == TIED and not unexpected, (missing, unexpected)
    assert twin.heads.lm.weight is twin.embed.weight and twin.heads.mlm.weight is twin.embed.weight
    return twin


def flax_model_(cfg, seed: int) -> Hyformer:
    """A Flax Hyformer with N(0, 0.1) noise added to every parameter: at the original's init (std 0.02)
    attention is nearly uniform, and a wrong RoPE pairing would move the logits by only ~1e-3."""
    model = Hyformer.from_config(cfg, seed=seed)
    leaves, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    nnx.update(model, jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                                for x, k in zip(leaves, keys)]))
    return model


@pytest.fixture(scope="module")
def pair():
    flax_model = flax_model_(CFG, seed=0)
    return flax_model, twin_from_flax(flax_model)


def ids_(b=B, t=T, seed=0):
    return np.random.RandomState(seed).randint(0, CFG.vocab_size, (b, t))


def mask_(padding, b=B, t=T):
    mask = np.ones((b, t), np.int64)
    if padding == "right":
        mask[0, 9:] = 0
        mask[2, 4:] = 0
    elif padding == "left":
        mask[0, :5] = 0
        mask[1, :1] = 0
    return mask


def _flax(model, ids, task, mask=None, labels=None):
    return model(jnp.asarray(ids), task, attention_mask=None if mask is None else jnp.asarray(mask),
                 labels=None if labels is None else jnp.asarray(labels))


def _torch(model, ids, task, mask=None, labels=None, **kw):
    with torch.no_grad():
        return model(torch.from_numpy(ids), task=task, attention_mask=None if mask is None else torch.from_numpy(mask),
                     labels=None if labels is None else torch.from_numpy(labels), **kw)


def assert_close(ours, theirs, atol=ATOL):
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=0, atol=atol)


@pytest.mark.parametrize("padding", ["none", "right", "left"])
@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_token_tasks_match_flax(pair, task, padding):
    flax_model, twin = pair
    ids, mask = ids_(), None if padding == "none" else mask_(padding)
    labels = ids.copy()
    labels[1, 2] = labels[2, 7] = -100
    ours, theirs = _flax(flax_model, ids, task, mask, labels), _torch(twin, ids, task, mask, labels)
    assert tuple(theirs.logits.shape) == (B, T, CFG.vocab_size)
    assert_close(ours.logits, theirs.logits)  # every position, padded queries included
    assert_close(ours.extras["hidden_states"], theirs.extras["hidden_states"])
    assert_close(ours.loss, theirs.loss)


@pytest.mark.parametrize("kind", ["classification", "regression", "multilabel"])
def test_prediction_head_and_losses_match_flax(kind):
    cfg = {"classification": CFG,
           "regression": CFG.replace(num_prediction_tasks=1),
           "multilabel": CFG.replace(prediction_task_type="multilabel", mlm_label_smoothing=0.1)}[kind]
    flax_model = flax_model_(cfg, seed=1)
    twin = twin_from_flax(flax_model)
    ids, mask = ids_(seed=1), mask_("right")
    labels = {"classification": np.array([2, -1, 0]),
              "regression": np.array([0.5, np.nan, -1.25], np.float32),
              "multilabel": np.array([[1, 0, 1], [0, np.nan, 1], [1, 1, 0]], np.float32)}[kind]
    ours, theirs = _flax(flax_model, ids, "prediction", mask, labels), _torch(twin, ids, "prediction", mask, labels)
    assert tuple(theirs.logits.shape) == (B, cfg.num_prediction_tasks)
    assert_close(ours.logits, theirs.logits)
    assert_close(ours.loss, theirs.loss)
    # mlm with label smoothing (0.1 in the multilabel config) over masked and -100 labels
    mlm_labels = np.where(np.arange(T)[None] % 3 == 0, ids, -100)
    assert_close(_flax(flax_model, ids, "mlm", mask, mlm_labels).loss, _torch(twin, ids, "mlm", mask, mlm_labels).loss)


def test_cached_decoding_and_generate_match_flax(pair):
    """Left-padded prompts: transformers' generate (DynamicCache, growing [B, P+T] mask) and the seed's
    kv_caches list (one token at a time, [B, 1] masks) give the Flax full-forward logits."""
    flax_model, twin = pair
    prompt, mask = ids_(b=2, t=6, seed=2), np.array([[1] * 6, [0, 0, 1, 1, 1, 1]])
    prompt[1, :2] = 0
    with torch.no_grad():
        gen = twin.generate(torch.from_numpy(prompt), attention_mask=torch.from_numpy(mask), max_new_tokens=5,
                            do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    seq = gen.sequences.numpy()
    assert seq.shape == (2, 11) and (seq[:, :6] == prompt).all()
    full_mask = np.concatenate([mask, np.ones((2, 5), np.int64)], axis=1)
    reference = np.asarray(_flax(flax_model, seq, "lm", full_mask).logits)  # [2, 11, V]
    for step, logits in enumerate(gen.logits):
        np.testing.assert_allclose(reference[:, 5 + step], logits.numpy(), rtol=0, atol=ATOL)
        assert (seq[:, 6 + step] == logits.argmax(-1).numpy()).all()

    out = _torch(twin, prompt, "lm", mask, use_cache=True)
    caches = out.extras["kv_caches"]
    assert len(caches) == CFG.n_layers and isinstance(caches[0], KVCache) and caches[0].length == 6
    np.testing.assert_allclose(reference[:, :6][mask == 1], out.logits.numpy()[mask == 1], rtol=0, atol=ATOL)
    for t in range(6, 10):
        out = _torch(twin, seq[:, t:t + 1], "lm", np.ones((2, 1), np.int64), kv_caches=caches, use_cache=True)
        caches = out.extras["kv_caches"]
        np.testing.assert_allclose(reference[:, t], out.logits.numpy()[:, 0], rtol=0, atol=ATOL)
    assert caches[0].length == 10 and caches[0].key_mask.tolist() == full_mask[:, :10].astype(bool).tolist()
    assert out.past_key_values is caches  # transformers < 5.24's name; >= 5.24 calls the field `cache`
    # the same cache passed as `cache` (transformers >= 5.24) or `past_key_values` (older) gives the same step;
    # a step that changed the cache in place would make the second differ
    steps = [_torch(twin, seq[:, 10:11], "lm", np.ones((2, 1), np.int64), use_cache=True, **{name: caches})
             for name in ("cache", "past_key_values")]
    np.testing.assert_array_equal(steps[0].logits.numpy(), steps[1].logits.numpy())
    np.testing.assert_allclose(reference[:, 10], steps[0].logits.numpy()[:, 0], rtol=0, atol=ATOL)


def test_save_pretrained_round_trip_keeps_heads_tied(pair, tmp_path):
    _, twin = pair
    twin.save_pretrained(tmp_path / "t")
    stored = set(load_file(str(tmp_path / "t" / "model.safetensors")))
    assert stored == set(twin.state_dict()) - TIED  # the tied heads are stored once, as embed.weight
    ids, mask = ids_(seed=3), mask_("left")
    expected = _torch(twin, ids, "mlm", mask).logits
    for cls in (HyformerForCausalLM, AutoModelForCausalLM, AutoModel):
        again = cls.from_pretrained(tmp_path / "t")
        assert type(again) is (HyformerModel if cls is AutoModel else HyformerForCausalLM)
        assert again.heads.lm.weight is again.embed.weight and again.heads.mlm.weight is again.embed.weight
        torch.testing.assert_close(_torch(again, ids, "mlm", mask).logits, expected, rtol=0, atol=0)


def test_trust_remote_code_export_loads_with_torch_and_transformers_only(pair, tmp_path):
    flax_model, twin = pair
    remote = tmp_path / "remote"
    twin.config.auto_map = export_code(remote)
    try:
        twin.save_pretrained(remote)
    finally:
        del twin.config.auto_map
    cfg = json.loads((remote / "config.json").read_text())
    assert cfg["model_type"] == "hyformer"
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_hyformer.HyformerForCausalLM"
    assert {"configuration_hyformer.py", "modeling_hyformer.py"} <= {p.name for p in remote.iterdir()}
    ids, mask = ids_(seed=4), mask_("right")
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    # A fresh interpreter that cannot import jaxmodels or interop: the checkout off sys.path and the editable
    # install's import hook removed, so only the shipped configuration/modeling files can be used.
    script = (
        "import importlib.util, os, sys\n"
        "sys.path[:] = [p for p in sys.path if not any(os.path.isdir(os.path.join(p or '.', n))\n"
        "                                              for n in ('jaxmodels', 'interop'))]\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')\n"
        "                    and '__editable__' not in type(f).__module__]\n"
        "assert importlib.util.find_spec('jaxmodels') is None and importlib.util.find_spec('interop') is None\n"
        "import numpy as np, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"d = {str(tmp_path)!r}\n"
        "m = AutoModelForCausalLM.from_pretrained(d + '/remote', trust_remote_code=True)\n"
        "assert type(m).__module__.endswith('modeling_hyformer') and m.heads.lm.weight is m.embed.weight\n"
        "ids, mask = torch.from_numpy(np.load(d + '/ids.npy')), torch.from_numpy(np.load(d + '/mask.npy'))\n"
        "with torch.no_grad():\n"
        "    np.save(d + '/lm.npy', m(ids).logits.numpy())\n"
        "    np.save(d + '/mlm.npy', m(ids, task='mlm', attention_mask=mask).logits.numpy())\n"
        "    np.save(d + '/gen.npy', m.generate(ids[:1, :4], max_new_tokens=3, do_sample=False).numpy())\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('jaxmodels', 'interop', 'jax', 'flax'))\n"
        "assert not bad, bad\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(_flax(flax_model, ids, "lm").logits, torch.from_numpy(np.load(tmp_path / "lm.npy")))
    assert_close(_flax(flax_model, ids, "mlm", mask).logits, torch.from_numpy(np.load(tmp_path / "mlm.npy")))
    gen = np.load(tmp_path / "gen.npy")
    assert gen.shape == (1, 7) and (gen[:, :4] == ids[:1, :4]).all()


ORIGINAL_FIELDS = ("vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len", "attn_dropout", "resid_dropout",
                   "eps", "num_prediction_tasks")


@pytest.mark.parametrize("heads", ["present", "absent"])
def test_original_checkpoint_layout_loads(pair, tmp_path, heads):
    """The original's save: config.json without model_type, and heads.lm/mlm.weight stored as copies of
    embed.weight (its three names share one tensor) or left out."""
    _, twin = pair
    state = {k: v.numpy().copy() for k, v in twin.state_dict().items() if heads == "present" or k not in TIED}
    save_file(state, str(tmp_path / "model.safetensors"))
    config = {k: v for k, v in twin.config.to_dict().items() if k in ORIGINAL_FIELDS}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HyformerForCausalLM.from_pretrained(tmp_path)
    assert loaded.heads.lm.weight is loaded.embed.weight and loaded.heads.mlm.weight is loaded.embed.weight
    ids = ids_(seed=5)
    torch.testing.assert_close(_torch(loaded, ids, "lm").logits, _torch(twin, ids, "lm").logits, rtol=0, atol=0)
    if heads == "present":
        state["heads.mlm.weight"] = state["heads.mlm.weight"] + 1.0
        save_file(state, str(tmp_path / "model.safetensors"))
        with pytest.raises(ValueError, match="heads.mlm.weight differs from embed.weight"):
            HyformerForCausalLM.from_pretrained(tmp_path)


def test_bad_config_and_input_raise_clear_errors(pair):
    _, twin = pair
    ids = torch.from_numpy(ids_())
    with pytest.raises(ValueError, match="vocab_size is required"):
        HyformerConfig()
    with pytest.raises(ValueError, match="must be divisible by n_heads"):
        HyformerConfig(vocab_size=17, d_model=25, n_heads=4)
    with pytest.raises(ValueError, match="tie_word_embeddings=False is not supported"):
        HyformerConfig(vocab_size=17, tie_word_embeddings=False)
    with pytest.raises(ValueError, match="unknown task 'clm'"):
        twin(ids, task="clm")
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 17\)"):
        twin(ids + 10)
    with pytest.raises(ValueError, match="exceeds max_seq_len=31"):
        twin(torch.zeros(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 12\), expected \[B=3, T=13\]"):
        twin(ids, attention_mask=torch.ones(3, 12))
    with pytest.raises(ValueError, match="only used by the causal task 'lm'"):
        twin(ids, task="mlm", use_cache=True)
    with pytest.raises(ValueError, match=r"mlm labels must have shape \(3, 13\)"):
        twin(ids, task="mlm", labels=ids[:, :5])
    with pytest.raises(ValueError, match=r"pass the cache once.*\['cache', 'kv_caches'\]"):
        twin(ids, kv_caches=[None], cache=[None])
    with pytest.raises(TypeError, match=r"unexpected arguments \['inputs_embeds'\]"):
        twin(ids, inputs_embeds=torch.zeros(3, 13, 24))
    no_head = HyformerModel(HyformerConfig(vocab_size=17, d_model=24, n_heads=4, n_layers=1))
    with pytest.raises(ValueError, match="set num_prediction_tasks"):
        no_head(ids, task="prediction")
