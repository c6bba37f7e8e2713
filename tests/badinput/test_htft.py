"""training.htft on bad input: damaged teacher weights, resume archives and capture caches, binary corpora and
outputs onto an input; one error line each (a damaged cache is captured again instead)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels import LlamaConfig, LlamaForCausalLM
from jaxmodels_interop.teacher import capture, token_stream
from jaxmodels_interop.teacher_load import load_teacher
from jaxmodels_training import htft
from tests.badinput.checks import refused

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny Hugging Face Llama directory (byte-level vocabulary), written by our export."""
    path = tmp_path_factory.mktemp("htft") / "teacher"
    LlamaForCausalLM(LlamaConfig.tiny(vocab_size=260), rngs=nnx.Rngs(0)).export_hf(path)
    return path


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def run(model, corpus, output, *extra):
    argv = ["--model", str(model), "--tokenizer", "bytes", "--data", str(corpus), "--output", str(output),
            "--train-tokens", "300", "--eval-tokens", "100", "--seq-len", "12", "--stride", "6", *map(str, extra)]
    return lambda: htft.main(argv)


def test_truncated_teacher_weights_are_refused(teacher, corpus, tmp_path, capsys):
    import shutil

    broken = shutil.copytree(teacher, tmp_path / "teacher")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:len(data) // 3])
    refused(capsys, run(broken, corpus, tmp_path / "out" / "htft.npz"), "model.safetensors", untouched=[tmp_path])


def test_damaged_resume_archive_is_refused(teacher, corpus, tmp_path, capsys):
    output = tmp_path / "htft.npz"
    output.write_bytes(b"PK\x03\x04 a zip archive cut short")
    refused(capsys, run(teacher, corpus, output, "--resume"), f"--resume: {output}", "not a readable HTFT checkpoint",
            untouched=[tmp_path])


def test_binary_garbage_as_training_text_is_refused(teacher, tmp_path, capsys):
    garbage = tmp_path / "blob.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    refused(capsys, run(teacher, garbage, tmp_path / "htft.npz"), str(garbage), "not UTF-8 text",
            untouched=[tmp_path])


@pytest.mark.parametrize("what", ["--output", "--metrics-path"])
def test_outputs_onto_the_corpus_are_refused(teacher, corpus, tmp_path, capsys, what):
    output, extra = (corpus, ()) if what == "--output" else (tmp_path / "htft.npz", ("--metrics-path", corpus))
    refused(capsys, run(teacher, corpus, output, "--force", *extra), f"{what} {corpus} is the source",
            untouched=[tmp_path])


def test_output_naming_a_directory_is_refused(teacher, corpus, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    refused(capsys, run(teacher, corpus, tmp_path / "out", "--force"), "is a directory", untouched=[tmp_path])


def test_damaged_capture_cache_is_captured_again(teacher, tmp_path, capsys):
    model = load_teacher(str(teacher), "bytes")
    stream = token_stream(model, [TEXT])[:200]
    first, hit = capture(model, stream, seq_len=12, stride=6, max_windows=8, cache_dir=tmp_path / "cache")
    assert not hit
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(cache.read_bytes()[:64])
    again, hit = capture(model, stream, seq_len=12, stride=6, max_windows=8, cache_dir=tmp_path / "cache")
    assert not hit and f"teacher cache {cache} is unreadable" in capsys.readouterr().err
    np.testing.assert_array_equal(again.hidden, first.hidden)
    assert capture(model, stream, seq_len=12, stride=6, max_windows=8, cache_dir=tmp_path / "cache")[1]
