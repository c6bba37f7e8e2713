"""jaxmodels-convert: bit-identical round trips with exact key sets, sharding, --verify, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch
import transformers
from safetensors.numpy import load_file
from safetensors.torch import load_file as torch_load_file

from jaxmodels_interop import convert_cli
from jaxmodels import Hyformer, HyformerConfig
from tests.hf_models import SMALL, tiny_hf_model

ROOT = Path(__file__).resolve().parents[2]


def hf_dir(path, kind="llama", dtype=torch.float32, **extra):
    return tiny_hf_model(kind, path, dtype=dtype, **extra)


def tensors(path):
    """{key: torch tensor} over every safetensors file of a directory (bf16-safe)."""
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(torch_load_file(str(f)))
    return out


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "jaxmodels_interop.convert_cli", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind, dtype, extra", [
    ("llama", torch.float32, dict(num_key_value_heads=2)),
    ("llama", torch.bfloat16, dict(num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True)),
    ("qwen2", torch.float32, dict(num_key_value_heads=2, tie_word_embeddings=True)),
    ("qwen2", torch.bfloat16, dict(num_key_value_heads=4)),
])
def test_hf_round_trip_is_bit_identical(tmp_path, kind, dtype, extra):
    hf_dir(tmp_path / "src", kind, dtype, **extra)
    convert_cli.from_hf(tmp_path / "src", tmp_path / "ours")
    convert_cli.to_hf(tmp_path / "ours", tmp_path / "back")
    a, b = tensors(tmp_path / "src"), tensors(tmp_path / "back")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == dtype
        assert torch.equal(a[k], b[k]), k
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert type(reloaded).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[kind]


def test_sharded_export_writes_an_exact_index(tmp_path):
    hf_dir(tmp_path / "src", "qwen2", num_key_value_heads=2)
    convert_cli.from_hf(tmp_path / "src", tmp_path / "ours", max_shard=12_000)
    convert_cli.to_hf(tmp_path / "ours", tmp_path / "back", max_shard=12_000)
    for d in ("ours", "back"):
        index = json.loads((tmp_path / d / "model.safetensors.index.json").read_text())
        files = sorted(set(index["weight_map"].values()))
        assert len(files) > 1
        total = sum(v.size * v.dtype.itemsize for f in files for v in load_file(str(tmp_path / d / f)).values())
        assert index["metadata"]["total_size"] == total
    assert sorted(tensors(tmp_path / "back")) == sorted(tensors(tmp_path / "src"))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert model.config.num_key_value_heads == 2


def test_dtype_option_casts(tmp_path):
    hf_dir(tmp_path / "src", "llama")
    convert_cli.from_hf(tmp_path / "src", tmp_path / "ours", dtype=convert_cli.DTYPES["bfloat16"])
    out = tensors(tmp_path / "ours")
    assert all(v.dtype == torch.bfloat16 for v in out.values())
    src = tensors(tmp_path / "src")
    assert torch.equal(out["embed.weight"], src["model.embed_tokens.weight"].to(torch.bfloat16))


def test_cli_verify_and_inspect(tmp_path):
    hf_dir(tmp_path / "src", "llama", num_key_value_heads=2)
    proc = cli("from-hf", tmp_path / "src", tmp_path / "ours", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "verify: max |logits difference| =" in proc.stdout
    diff = float(proc.stdout.split("=")[1].split()[0])
    assert diff < 1e-4
    proc = cli("inspect", tmp_path / "ours")
    info = json.loads(proc.stdout)
    assert info["format"] == "jaxmodels" and info["model_type"] == "llama"
    assert info["parameters"] == sum(p.numel() for p in transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**SMALL, num_key_value_heads=2)).parameters())


def test_hyformer_round_trips_in_both_layouts(tmp_path):
    Hyformer.from_config(HyformerConfig.tiny(num_prediction_tasks=2), seed=3).save_pretrained(tmp_path / "ours")
    convert_cli.to_hf(tmp_path / "ours", tmp_path / "twin")
    convert_cli.to_hf(tmp_path / "ours", tmp_path / "orig", layout="original")
    orig_keys = set(tensors(tmp_path / "orig"))
    assert {"heads.lm.weight", "heads.mlm.weight", "embed.weight", "heads.prediction.classifier.weight"} <= orig_keys
    assert "heads.lm.weight" not in tensors(tmp_path / "twin")  # transformers re-ties it
    assert "model_type" not in json.loads((tmp_path / "orig" / "config.json").read_text())
    assert json.loads((tmp_path / "twin" / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"]
    ours = load_file(str(tmp_path / "ours" / "model.safetensors"))
    for src in ("twin", "orig"):
        convert_cli.from_hf(tmp_path / src, tmp_path / f"back-{src}")
        back = load_file(str(tmp_path / f"back-{src}" / "model.safetensors"))
        assert sorted(back) == sorted(ours)
        assert all(np.array_equal(back[k], ours[k]) for k in ours)


def test_original_layout_refuses_what_it_cannot_represent(tmp_path):
    cfg = HyformerConfig.tiny(num_prediction_tasks=2, prediction_task_type="multilabel")
    Hyformer.from_config(cfg).save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match=r"cannot represent \['prediction_task_type'\]"):
        convert_cli.to_hf(tmp_path / "ours", tmp_path / "orig", layout="original")


def test_training_run_directory_exports(tmp_path):
    """A run directory of training.hyformer converts directly (its model/ is used)."""
    run = tmp_path / "run"
    Hyformer.from_config(HyformerConfig.tiny()).save_pretrained(run / "model")
    (run / "run.json").write_text("{}")
    convert_cli.to_hf(run, tmp_path / "hf")
    assert (tmp_path / "hf" / "modeling_hyformer.py").is_file()


def test_pytorch_bin_checkpoint_loads_with_weights_only(tmp_path):
    model = hf_dir(tmp_path / "st", "llama", num_key_value_heads=2)
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    convert_cli.from_hf(tmp_path / "bin", tmp_path / "ours")
    convert_cli.from_hf(tmp_path / "st", tmp_path / "ours2")
    a, b = tensors(tmp_path / "ours"), tensors(tmp_path / "ours2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    import jaxmodels

    with pytest.raises(ValueError, match="found pytorch_model.bin .*jaxmodels-convert from-hf"):
        jaxmodels.from_pretrained(tmp_path / "bin")


def _corrupt(path, how):
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if how == "truncate" else b"garbage" + data[7:])


@pytest.mark.parametrize("case, message", [
    ("truncate", "model.safetensors: not a readable safetensors file"),
    ("garbage", "model.safetensors: not a readable safetensors file"),
    ("missing-shard", r"names shard\(s\) that do not exist: \['model-00002-of-00002.safetensors'\]"),
    ("wrong-shape", "tensor 'model.layers.0.mlp.up_proj.weight' has shape (40, 20), expected (40, 24)"),
    ("int-dtype", "tensor 'model.norm.weight' has dtype I32, expected a floating-point dtype"),
    ("config-mismatch", "missing tensor 'model.layers.2.input_layernorm.weight'"),
    ("unknown-type", "unsupported model_type 'gpt_neox'; supported: gemma3_text, hyformer, llama, mistral, qwen2, qwen3, vvalt"),
    ("no-config", "no config.json"),
])
def test_bad_input_is_reported_without_traceback(tmp_path, case, message):
    src = tmp_path / "src"
    hf_dir(src, "llama")
    if case in ("truncate", "garbage"):
        _corrupt(src, case)
    elif case == "missing-shard":
        hf_dir(src, "llama")
        transformers.LlamaForCausalLM.from_pretrained(src).save_pretrained(tmp_path / "sh", max_shard_size="30KB")
        src = tmp_path / "sh"
        os.remove(src / "model-00002-of-00002.safetensors")
    elif case in ("wrong-shape", "int-dtype"):
        from safetensors.numpy import save_file

        t = load_file(str(src / "model.safetensors"))
        if case == "wrong-shape":
            t["model.layers.0.mlp.up_proj.weight"] = np.zeros((40, 20), np.float32)
        else:
            t["model.norm.weight"] = np.ones(24, np.int32)
        save_file(t, str(src / "model.safetensors"), metadata={"format": "pt"})
    elif case in ("config-mismatch", "unknown-type"):
        cfg = json.loads((src / "config.json").read_text())
        cfg.update(num_hidden_layers=3) if case == "config-mismatch" else cfg.update(model_type="gpt_neox")
        (src / "config.json").write_text(json.dumps(cfg))
    else:
        os.remove(src / "config.json")
    proc = cli("from-hf", src, tmp_path / "dst")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr or __import__("re").search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "dst").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")], "no temporary leftovers"


def test_existing_destination_is_untouched_without_force(tmp_path):
    hf_dir(tmp_path / "src", "llama")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    proc = cli("from-hf", tmp_path / "src", tmp_path / "dst")
    assert proc.returncode == 2 and "already exists; refusing to overwrite it" in proc.stderr
    assert (tmp_path / "dst" / "keep.txt").read_text() == "mine"
    proc = cli("from-hf", tmp_path / "src", tmp_path / "dst", "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "dst" / "keep.txt").exists() and (tmp_path / "dst" / "model.safetensors").is_file()


def test_bad_shard_size():
    with pytest.raises(ValueError, match="expected a size such as 500MB"):
        convert_cli.parse_size("lots")
    assert convert_cli.parse_size("2GB") == 2 * 10**9 and convert_cli.parse_size("1GiB") == 2**30


def test_vvalt_converts_both_ways_with_verify(tmp_path, capsys):
    from flax import nnx

    from jaxmodels import VVALTConfig, VVALTForSequenceClassification

    cfg = VVALTConfig(input_dim=11, frame_dim=6, task_dim=5, num_labels=3, seed=2)
    VVALTForSequenceClassification(cfg, rngs=nnx.Rngs(0)).save_pretrained(tmp_path / "ours")
    convert_cli.main(["to-hf", str(tmp_path / "ours"), str(tmp_path / "hf"), "--verify"])
    convert_cli.main(["from-hf", str(tmp_path / "hf"), str(tmp_path / "back"), "--verify"])
    assert capsys.readouterr().out.count("verify: max |last_hidden_state difference|") == 2
    a, b = load_file(str(tmp_path / "ours" / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
