import json

import numpy as np
import pytest

from jaxmodels_interop.teacher import HFTeacher, TeacherError, capture, token_stream, window_starts
from tests.htft.conftest import CORPUS, make_teacher


def test_window_starts():
    assert window_starts(10, 4, 3).tolist() == [0, 3]  # start 6 would need token 10
    assert window_starts(10, 4, 1, max_windows=2).tolist() == [0, 1]
    assert window_starts(4, 4, 1).size == 0


def test_capture_matches_transformers_and_hits_cache(teacher_dir, tmp_path):
    import torch

    teacher = HFTeacher(teacher_dir)
    stream = token_stream(teacher, [CORPUS])
    assert stream[0] == teacher.bos_id
    w, hit = capture(teacher, stream, seq_len=11, stride=5, max_windows=7, with_logits=True, batch_size=3,
                     cache_dir=tmp_path)
    assert not hit and w.tokens.shape == (7, 11) and w.hidden.shape == (7, 11, 24) and w.logits.shape == (7, 300)
    np.testing.assert_array_equal(w.targets, stream[np.arange(7) * 5 + 11])
    with torch.no_grad():
        out = teacher.model(input_ids=torch.as_tensor(stream[10:21][None]), output_hidden_states=True)
    np.testing.assert_allclose(w.hidden[2], out.hidden_states[-1][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(w.logits[2], out.logits[0, -1].numpy(), atol=1e-4)
    again, hit = capture(teacher, stream, seq_len=11, stride=5, max_windows=7, with_logits=True, cache_dir=tmp_path)
    assert hit
    np.testing.assert_array_equal(again.hidden, w.hidden)
    _, hit = capture(teacher, stream, seq_len=11, stride=4, max_windows=7, with_logits=True, cache_dir=tmp_path)
    assert not hit  # other settings, other key


def test_bad_teachers(teacher_dir, tmp_path):
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(TeacherError, match="model_type 'vit' .* is not a causal language model"):
        HFTeacher(vit)
    with pytest.raises(TeacherError, match="no config.json there"):
        HFTeacher(tmp_path)
    big_tok = make_teacher(tmp_path / "mismatch", vocab_size=280, tokenizer_vocab=290)
    with pytest.raises(TeacherError, match="tokenizer has 290 tokens but the teacher's embedding has 280 rows"):
        HFTeacher(big_tok)
    teacher = HFTeacher(teacher_dir)
    with pytest.raises(TeacherError, match="--seq-len 65 exceeds the teacher's maximum of 64 positions"):
        capture(teacher, np.arange(100) % 50, seq_len=65, stride=1)
    with pytest.raises(TeacherError, match="holds no window"):
        capture(teacher, np.arange(5), seq_len=5, stride=1)


def test_flax_teacher_capture():
    pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")
    import dataclasses

    from flax import nnx

    from jaxmodels_interop.teacher import FlaxTeacher
    from jaxmodels import Hyformer, HyformerConfig
    from jaxmodels_training.tokenizer import ByteTokenizer

    model = Hyformer(dataclasses.replace(HyformerConfig.tiny(), vocab_size=260), rngs=nnx.Rngs(0))
    teacher = FlaxTeacher(model, ByteTokenizer(), name="tiny", fingerprint="tiny-0")
    stream = token_stream(teacher, ["hello world, a test of the flax teacher"])
    w, hit = capture(teacher, stream, seq_len=8, stride=4, max_windows=3, with_logits=True)
    assert not hit and w.hidden.shape == (3, 8, model.spec.d_model) and w.logits.shape == (3, 260)
    hidden, _ = model.hidden_states(w.tokens[1:2], causal=True)
    np.testing.assert_allclose(w.hidden[1], np.asarray(hidden)[0], atol=1e-5)
    np.testing.assert_allclose(w.logits[1], np.asarray(model(w.tokens[1:2]).logits)[0, -1], atol=1e-5)
