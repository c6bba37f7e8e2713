"""The trainers' run directories on bad input (training.hyformer, training.vvalt, training.lm share
training.rundir): --out never onto, around or into an input, --force never through a symbolic link, unusable
--out paths and damaged run files, corpora and tokenizers reported as one error line, with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from jaxmodels import LlamaConfig, LlamaForCausalLM
from jaxmodels_training import hyformer, lm, rundir, vvalt
from tests.badinput.checks import leftovers, refused
from tests.badinput.conftest import enospc

TINY = ["--preset", "tiny", "--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus" / "a.txt"
    path.parent.mkdir()
    path.write_text("def f(x):\n    return x + 1\n" * 400)
    return path


def train(corpus, out, *extra):
    return lambda: hyformer.main(["--data", str(corpus), "--out", str(out), *TINY, *map(str, extra)])


# -- source/destination overlap and symbolic links ------------------------------------------------------

@pytest.mark.parametrize("where, relation", [("file", "is"), ("folder", "holds")])
def test_out_is_never_an_input_or_a_folder_holding_one(corpus, tmp_path, capsys, where, relation):
    out = corpus if where == "file" else corpus.parent
    refused(capsys, train(corpus, out, "--force"), f"--out {out} {relation} the source", untouched=[tmp_path])


def test_out_inside_the_tokenizer_directory_is_refused(corpus, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = tmp_path / "tok"
    tok.mkdir()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([corpus.read_text()], trainers.BpeTrainer(
        vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bpe.save(str(tok / "tokenizer.json"))
    refused(capsys, train(corpus, tok / "run", "--tokenizer", tok, "--force"), "lies inside the source",
            untouched=[tmp_path])


def test_symlinked_out_with_force_deletes_nothing_through_the_link(corpus, tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not a run")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    refused(capsys, train(corpus, tmp_path / "link", "--force"), "is a symbolic link", untouched=[tmp_path])
    (tmp_path / "to-data").symlink_to(corpus.parent, target_is_directory=True)
    refused(capsys, train(corpus, tmp_path / "to-data", "--force"), "holds the source", untouched=[tmp_path])


# -- --out that cannot be used -----------------------------------------------------------------------------

def test_out_naming_an_existing_file_is_refused(corpus, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for extra in ((), ("--force",)):
        refused(capsys, train(corpus, tmp_path / "notes.txt", *extra), "is a file, not a directory",
                untouched=[tmp_path])


def test_read_only_out_is_one_error_line(corpus, read_only, capsys):
    locked = read_only()
    refused(capsys, train(corpus, locked / "run"), f"--out {locked / 'run'}: cannot write there",
            untouched=[locked, corpus])


def test_disk_full_at_the_run_file_leaves_no_run_directory(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rundir, "atomic_write_text", enospc)
    refused(capsys, train(corpus, tmp_path / "run"), "No space left on device", untouched=[corpus])
    assert not (tmp_path / "run").exists() and leftovers(tmp_path, "run") == []


@pytest.mark.parametrize("content, expected", [('{"steps": 3}', "has no 'identity' object"),
                                               ("{not json", "not valid JSON")])
def test_resume_of_a_damaged_run_json_is_refused(corpus, tmp_path, capsys, content, expected):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(content)
    refused(capsys, train(corpus, tmp_path / "run", "--resume"), "run.json", expected, untouched=[tmp_path])


# -- malformed inputs ----------------------------------------------------------------------------------------

def test_binary_garbage_as_training_text_is_refused_before_out_is_touched(tmp_path, capsys):
    garbage = tmp_path / "blob.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    refused(capsys, train(garbage, tmp_path / "run"), str(garbage), "not UTF-8 text", untouched=[tmp_path])


def test_corrupt_tokenizer_json_is_refused(corpus, tmp_path, capsys):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": 7}}')
    refused(capsys, train(corpus, tmp_path / "run", "--tokenizer", tok), str(tok), "cannot load the tokenizer",
            untouched=[tmp_path])


@pytest.mark.parametrize("value", [-8, "8", 8.5])
def test_config_file_with_a_bad_dimension_is_refused(corpus, tmp_path, capsys, value):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"vocab_size": 260, "d_model": 16, "n_heads": value, "n_layers": 1}))
    argv = ["--data", str(corpus), "--out", str(tmp_path / "run"), "--config", str(config), *TINY[2:]]
    refused(capsys, lambda: hyformer.main(argv), str(config), "n_heads must be a positive integer",
            untouched=[tmp_path])


# -- the other trainers reach the same guard ------------------------------------------------------------------

def test_vvalt_out_onto_its_data_is_refused(tmp_path, capsys):
    data = tmp_path / "task.npz"
    rng = np.random.default_rng(0)
    np.savez(data, inputs=rng.normal(size=(64, 16)), tasks=rng.normal(size=(64, 8)), labels=rng.integers(0, 2, 64))
    argv = ["--data", str(data), "--out", str(tmp_path), "--force", "--steps", "1", "--batch-size", "8"]
    refused(capsys, lambda: vvalt.main(argv), "holds the source", str(data), untouched=[tmp_path])


def test_lm_out_onto_its_model_is_refused(corpus, tmp_path, capsys):
    model = tmp_path / "model"
    LlamaForCausalLM(LlamaConfig.tiny(vocab_size=260), rngs=nnx.Rngs(0)).save_pretrained(model)
    argv = ["--model", str(model), "--tokenizer", "bytes", "--data", str(corpus), "--out", str(model), "--force",
            "--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-fraction", "0"]
    refused(capsys, lambda: lm.main(argv), f"--out {model} is the source", untouched=[tmp_path])


def test_run_dir_treats_the_paths_its_identity_records_as_inputs(tmp_path):
    """training.svf passes no sources: its identity's resolved --model is what protects the model."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for out in (model, tmp_path):
        with pytest.raises(rundir.RunDirError, match="the source"):
            rundir.RunDir(out, {"model": str(model.resolve()), "task": "arith"}, resume=False, force=True)
    assert (model / "config.json").read_text() == "{}"


def test_metrics_path_onto_the_training_text_is_refused(tmp_path, capsys):
    from jaxmodels_training import hyformer as hyformer_cli

    text = tmp_path / "corpus.txt"
    text.write_text("some training text\n" * 50)
    before = text.read_bytes()
    with pytest.raises(SystemExit) as err:
        hyformer_cli.main(["--data", str(text), "--out", str(tmp_path / "run"), "--metrics-path", str(text),
                           "--steps", "1", "--batch-size", "2", "--seq-len", "16"])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: --metrics-path") and str(text) in message and "\n" not in message
    assert text.read_bytes() == before and not (tmp_path / "run").exists()


def test_a_non_numeric_rope_theta_names_the_file_and_key(tmp_path):
    import json

    from jaxmodels.config import ConfigFieldError
    from jaxmodels.pretrained import from_pretrained
    from tests.hf_models import tiny_hf_model

    model_dir = tmp_path / "llama"
    tiny_hf_model("llama", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("rope_parameters", None)
    config["rope_theta"] = "ten thousand"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigFieldError, match=r"config\.json.*rope_theta must be a number, got 'ten thousand'"):
        from_pretrained(model_dir)
