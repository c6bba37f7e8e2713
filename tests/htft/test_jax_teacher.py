"""Hugging Face directories of the families we implement captured in JAX by our Flax decoder (no torch), equal to
transformers' capture of the same directory: hidden states, last-position logits, RoPE phases, token stream."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels_interop.teacher import FlaxTeacher, TeacherError, capture, token_stream
from jaxmodels_interop.teacher_load import load_teacher
from tests.htft.conftest import CORPUS, make_tokenizer


@pytest.fixture(scope="module")
def tied_llama_dir(tmp_path_factory):
    """A tiny SmolLM2-like Llama: tied embeddings, grouped KV heads, linearly scaled RoPE."""
    from tests.hf_models import tiny_hf_model

    path = tmp_path_factory.mktemp("llama")
    tiny_hf_model("llama", path, vocab_size=300, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=1,
                  eos_token_id=2, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0})
    make_tokenizer(290).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["gemma3_text", "llama"])
def test_jax_capture_equals_transformers(kind, teacher_dir, tied_llama_dir, tmp_path):
    pytest.importorskip("torch", reason="the comparison needs transformers' PyTorch model")
    path = teacher_dir if kind == "gemma3_text" else tied_llama_dir
    jx, pt = load_teacher(str(path)), load_teacher(str(path), backend="torch")
    assert isinstance(jx, FlaxTeacher) and jx.backend == "jax" and pt.backend == "torch"
    assert (jx.vocab_size, jx.hidden_size, jx.max_positions, jx.bos_id) == (pt.vocab_size, pt.hidden_size, 64,
                                                                            pt.bos_id)
    stream = token_stream(jx, [CORPUS])
    np.testing.assert_array_equal(stream, token_stream(pt, [CORPUS]))
    np.testing.assert_allclose(jx.rope_frequencies(), pt.rope_frequencies(), rtol=1e-6)
    a, hit = capture(jx, stream, seq_len=13, stride=7, max_windows=5, with_logits=True, batch_size=2,
                     cache_dir=tmp_path)
    b, _ = capture(pt, stream, seq_len=13, stride=7, max_windows=5, with_logits=True, batch_size=3)
    assert not hit and a.hidden.shape == (5, 13, jx.hidden_size) and a.logits.shape == (5, 300)
    np.testing.assert_allclose(a.hidden, b.hidden, atol=1e-4)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)
    np.testing.assert_allclose(a.rope, b.rope, atol=1e-6)
    np.testing.assert_allclose(jx.head(a.hidden[:, -1]), a.logits, atol=1e-5)  # the head alone, as timed
    np.testing.assert_allclose(pt.head(b.hidden[:, -1]), b.logits, atol=1e-5)
    again, hit = capture(jx, stream, seq_len=13, stride=7, max_windows=5, with_logits=True, cache_dir=tmp_path)
    assert hit
    np.testing.assert_array_equal(again.hidden, a.hidden)


def test_jax_teacher_needs_no_torch(tied_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now raises ImportError
    teacher = load_teacher(str(tied_llama_dir))
    w, _ = capture(teacher, token_stream(teacher, [CORPUS[:400]]), seq_len=8, stride=8, max_windows=2,
                   with_logits=True)
    assert w.hidden.shape == (2, 8, 32) and np.all(np.isfinite(w.logits))
    want = np.asarray(teacher.model(w.tokens).logits)[:, -1]  # the model's own head over all positions
    np.testing.assert_allclose(w.logits, want, atol=1e-5)


def test_backend_choice_errors(hyformer_run, tmp_path):
    with pytest.raises(TeacherError, match="--teacher-backend 'tf': expected one of auto, jax, torch"):
        load_teacher(str(hyformer_run), backend="tf")
    with pytest.raises(TeacherError, match="one of our checkpoints runs in JAX only; --teacher-backend torch"):
        load_teacher(str(hyformer_run), backend="torch")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(TeacherError, match=r"--teacher-backend jax needs a family we implement \(gemma3_text, .*"
                                           r"llama.*\); this config.json is not one; use --teacher-backend torch"):
        load_teacher(str(tmp_path), backend="jax")
    notok = tmp_path / "notok"
    notok.mkdir()
    (notok / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(TeacherError, match="a Hugging Face directory with no tokenizer .*--tokenizer bytes"):
        load_teacher(str(notok))
