"""The teacher's real RoPE phases: the frequency choice, and capture from transformers models (Gemma 3 with per-layer
RoPE, Llama with scaled RoPE), our exported Hyformer and our Flax Hyformer."""

import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")
pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

from jaxmodels_interop.teacher import HFTeacher, TeacherError, capture, token_stream
from jaxmodels_interop.teacher_load import load_teacher
from jaxmodels.htft import ContextBuilder, ContextBuilderConfig, rope_phases
from tests.htft.conftest import CORPUS, make_tokenizer


def expected_column(inv_freq, w):
    """The rule written out: the fastest frequency with theta (W - 1) <= pi."""
    ok = [f for f in inv_freq if f * (w - 1) <= np.pi]
    return max(ok) if ok else min(inv_freq)


def test_rope_phases_rule_and_errors():
    got = rope_phases([1.0, 0.1, 0.01], 16)  # 1.0 * 15 > pi; 0.1 * 15 = 1.5 <= pi
    p = np.arange(16)
    np.testing.assert_allclose(got, np.stack([np.sin(0.1 * p), np.cos(0.1 * p)], 1), atol=1e-7)
    assert got.dtype == np.float32 and got.shape == (16, 2)
    np.testing.assert_allclose(rope_phases([5.0, 4.0], 4)[:, 0], np.sin(4.0 * np.arange(4)), atol=1e-6)  # slowest
    np.testing.assert_array_equal(rope_phases([1.0], 1), [[0.0, 1.0]])
    for bad in ([], [0.0, 1.0], [-1.0], [np.nan]):
        with pytest.raises(ValueError, match="inv_freq must be a non-empty array of positive frequencies"):
            rope_phases(bad, 8)


def test_gemma3_capture_has_its_rope_phases_and_the_context_uses_them(teacher_dir, tmp_path):
    import torch

    teacher = HFTeacher(teacher_dir)
    w = 11
    stream = token_stream(teacher, [CORPUS])
    windows, _ = capture(teacher, stream, seq_len=w, stride=5, max_windows=4, cache_dir=tmp_path)
    cfg, rotary = teacher.model.config, teacher.model.model.rotary_emb
    # the global layers' RoPE when the model has any (this tiny one has only sliding-window layers)
    kind = "full_attention" if "full_attention" in rotary.rope_type else sorted(rotary.rope_type)[0]
    assert kind == "sliding_attention"
    hd = cfg.head_dim
    theta = cfg.rope_parameters[kind]["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    j = int(np.argmin(np.abs(inv - expected_column(inv, w))))
    # the rotary module's own forward (what those attention layers use), at positions 0..W-1
    cos, sin = rotary(torch.zeros(1), torch.arange(w)[None], kind)
    want = np.stack([sin[0, :, j].numpy(), cos[0, :, j].numpy()], axis=1)
    assert windows.rope.shape == (4, w, 2)
    for r in windows.rope:
        np.testing.assert_allclose(r, want, atol=1e-6)
    batch = ContextBuilder(ContextBuilderConfig(window_size=w, hidden_dim=24, hashed_dim=16)).build_windows(windows)
    np.testing.assert_allclose(batch.context[:, -2 * w:], windows.rope.reshape(4, 2 * w), atol=0)
    assert not np.allclose(want, ContextBuilder(ContextBuilderConfig(window_size=w, hidden_dim=24)).synthetic_phases)
    again, hit = capture(teacher, stream, seq_len=w, stride=5, max_windows=4, cache_dir=tmp_path)
    assert hit and np.array_equal(again.rope, windows.rope)


def test_llama_capture_applies_the_rope_scaling(tmp_path):
    from tests.hf_models import tiny_hf_model

    tiny_hf_model("llama", tmp_path, vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, bos_token_id=1,
                  eos_token_id=2, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100.0})
    make_tokenizer(290).save_pretrained(tmp_path)
    teacher = HFTeacher(tmp_path)
    inv = 1.0 / 100.0 ** (np.arange(0, 16, 2) / 16) / 4.0  # linear scaling divides every frequency
    np.testing.assert_allclose(teacher.rope_frequencies(), inv, rtol=1e-6)
    windows, _ = capture(teacher, token_stream(teacher, [CORPUS]), seq_len=9, stride=9, max_windows=2)
    theta = expected_column(inv, 9)
    np.testing.assert_allclose(windows.rope[1, :, 0], np.sin(theta * np.arange(9)), atol=1e-6)


def test_exported_hyformer_equals_our_flax_hyformer_hidden_states_logits_and_phases(hyformer_run, hyformer_hf):
    with pytest.raises(TeacherError, match="no tokenizer files there .*pass --tokenizer DIR .* or --tokenizer bytes"):
        HFTeacher(hyformer_hf)
    hf, flax = load_teacher(str(hyformer_hf), "bytes", backend="torch"), load_teacher(str(hyformer_run))
    assert type(hf).__name__ == "HFTeacher" and type(flax).__name__ == "FlaxTeacher"
    stream = token_stream(flax, [CORPUS])
    np.testing.assert_array_equal(stream, token_stream(hf, [CORPUS]))
    a, _ = capture(hf, stream, seq_len=12, stride=7, max_windows=3, with_logits=True)
    b, _ = capture(flax, stream, seq_len=12, stride=7, max_windows=3, with_logits=True)
    np.testing.assert_allclose(a.hidden, b.hidden, atol=1e-4)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)
    hd = flax.model.spec.head_dim
    inv = 1.0 / 10000.0 ** (np.arange(0, hd, 2) / hd)  # the original Hyformer's RoPE (interleaved, theta 1e4)
    theta = expected_column(inv, 12)
    want = np.stack([np.sin(theta * np.arange(12)), np.cos(theta * np.arange(12))], 1)
    np.testing.assert_allclose(a.rope[0], want, atol=1e-6)
    np.testing.assert_allclose(b.rope[2], want, atol=1e-6)
