"""jaxmodels-convert on bad input: sources never destroyed, shard indexes kept inside their directory, malformed
configs and weights refused (or, NaN/inf, reported), unwritable destinations reported; one error line each."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxmodels import LlamaConfig, LlamaForCausalLM
from jaxmodels.hf import writer
from jaxmodels.hf.source import INDEX, NonFiniteWeights
from jaxmodels_interop import convert_cli
from tests.badinput.checks import leftovers, refused, snapshot
from tests.badinput.conftest import enospc


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Hugging Face Llama directory, single-file and sharded (written by our export, no torch needed)."""
    root = tmp_path_factory.mktemp("convert")
    model = LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0))
    model.export_hf(root / "single")
    model.export_hf(root / "sharded", max_shard_size=4096)
    return root


@pytest.fixture
def hf(exported, tmp_path):
    """hf(kind) -> a fresh copy of the single-file or sharded checkpoint under tmp_path/models/."""
    def copy(kind: str = "single"):
        return shutil.copytree(exported / kind, tmp_path / "models" / kind)
    return copy


def convert(*argv):
    return lambda: convert_cli.main([str(a) for a in argv])


# -- source/destination overlap ---------------------------------------------------------------------------

@pytest.mark.parametrize("where, relation", [("itself", "is"), ("parent", "holds"), ("inside", "lies inside"),
                                             ("link", "is")])
def test_from_hf_never_writes_onto_around_or_into_its_source(hf, tmp_path, capsys, where, relation):
    src = hf()
    dst = {"itself": src, "parent": src.parent, "inside": src / "converted", "link": tmp_path / "link"}[where]
    if where == "link":
        dst.symlink_to(src, target_is_directory=True)
    refused(capsys, convert("from-hf", src, dst, "--force"), f"{relation} the source", untouched=[tmp_path])


def test_to_hf_never_writes_onto_its_source_or_a_run_holding_it(hf, tmp_path, capsys):
    ours = tmp_path / "run" / "model"
    convert_cli.main(["from-hf", str(hf()), str(ours)])
    (tmp_path / "run" / "run.json").write_text('{"identity": {}}')
    for dst in (ours, tmp_path / "run", ours.parent.parent):
        refused(capsys, convert("to-hf", tmp_path / "run", dst, "--force"), "the source", untouched=[tmp_path])


# -- shard indexes: traversal, symbolic links, malformed maps ----------------------------------------------

def _rewrite_index(directory, change):
    index = json.loads((directory / INDEX).read_text())
    change(index)
    (directory / INDEX).write_text(json.dumps(index))


def test_index_naming_shards_outside_the_directory_is_refused(hf, tmp_path, capsys):
    src = hf("sharded")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    first = sorted(src.glob("*.safetensors"))[0]
    shutil.copy(first, outside / "model.safetensors")
    keys = [k for k, f in json.loads((src / INDEX).read_text())["weight_map"].items() if f == first.name]
    for name in ("../../elsewhere/model.safetensors", str(outside / "model.safetensors")):
        _rewrite_index(src, lambda index: index["weight_map"].update(dict.fromkeys(keys, name)))
        refused(capsys, convert("inspect", src), INDEX, "outside the checkpoint directory", name,
                untouched=[tmp_path])


def test_index_shard_that_is_a_link_leading_out_is_refused(hf, tmp_path, capsys):
    src = hf("sharded")
    first = sorted(src.glob("*.safetensors"))[0]
    shutil.move(first, tmp_path / "moved.safetensors")
    first.symlink_to(tmp_path / "moved.safetensors")
    refused(capsys, convert("from-hf", src, tmp_path / "out"), "outside the checkpoint directory", first.name,
            untouched=[tmp_path])


@pytest.mark.parametrize("weight_map, expected", [([], "a weight_map of type list"), (None, "no weight_map"),
                                                  ({"x": 3}, "outside the checkpoint directory")])
def test_index_with_a_malformed_weight_map_is_refused(hf, tmp_path, capsys, weight_map, expected):
    src = hf("sharded")
    _rewrite_index(src, lambda index: index.update(weight_map=weight_map) if weight_map is not None
                   else index.pop("weight_map"))
    refused(capsys, convert("inspect", src), INDEX, expected, untouched=[tmp_path])


def test_index_total_size_must_match_the_shards(hf, tmp_path, capsys):
    src = hf("sharded")
    _rewrite_index(src, lambda index: index["metadata"].update(total_size=index["metadata"]["total_size"] + 4))
    refused(capsys, convert("from-hf", src, tmp_path / "out"), "total_size", "bytes of tensors",
            untouched=[tmp_path])


def test_a_tensor_in_two_shards_is_refused(hf, tmp_path, capsys):
    src = hf("sharded")
    a, b = sorted(src.glob("*.safetensors"))[:2]
    key = sorted(load_file(a))[0]
    save_file({**load_file(b), key: load_file(a)[key]}, str(b))
    refused(capsys, convert("inspect", src), "more than one shard", key, untouched=[tmp_path])


# -- malformed configs and weights -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-24, "24", 24.0])
@pytest.mark.parametrize("command", ["inspect", "from-hf"])
def test_config_with_a_bad_dimension_is_refused(hf, tmp_path, capsys, value, command):
    src = hf()
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "hidden_size": value}))
    argv = ("inspect", src) if command == "inspect" else ("from-hf", src, tmp_path / "out")
    refused(capsys, convert(*argv), str(src / "config.json"), "hidden_size must be a positive integer",
            repr(value), untouched=[tmp_path])


def test_truncated_weights_are_refused(hf, tmp_path, capsys):
    src = hf()
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:len(data) // 2])
    refused(capsys, convert("from-hf", src, tmp_path / "out"), "model.safetensors", untouched=[tmp_path])


def test_nan_and_inf_weights_are_converted_with_a_warning_naming_them(hf, tmp_path):
    src = hf()
    tensors = load_file(src / "model.safetensors")
    bad = "model.layers.1.mlp.down_proj.weight"
    tensors[bad] = tensors[bad].copy()
    tensors[bad][0, :3] = [np.nan, np.inf, -np.inf]
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(NonFiniteWeights, match=rf"tensor '{bad}' holds 3 NaN or infinite value"):
        convert_cli.main(["from-hf", str(src), str(tmp_path / "out")])
    assert (tmp_path / "out" / "model.safetensors").is_file()


# -- destinations that cannot be written -----------------------------------------------------------------

def test_read_only_destination_is_one_error_line(hf, read_only, capsys):
    src, locked = hf(), read_only()
    refused(capsys, convert("from-hf", src, locked / "out"), str(locked / "out"), untouched=[src, locked])


def test_disk_full_leaves_nothing_half_written(hf, tmp_path, monkeypatch, capsys):
    src = hf()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("the previous output")
    real = writer._write_file

    def fill_then_fail(path, *args):
        real(path, *args)
        path.write_bytes(path.read_bytes()[:100])  # a partial shard, as a full disk leaves it
        enospc()

    monkeypatch.setattr(writer, "_write_file", fill_then_fail)
    before = snapshot(tmp_path / "out")
    refused(capsys, convert("from-hf", src, tmp_path / "out", "--force"), os.strerror(28), untouched=[src])
    assert snapshot(tmp_path / "out") == before
    assert leftovers(tmp_path, "out") == []
