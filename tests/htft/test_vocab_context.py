import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels.htft import ContextBuilder, ContextBuilderConfig, build_vocab_mapping

W, H, L, E = 13, 24, 5, 7  # prime, distinct


def test_vocab_mapping_tie_order_and_unk():
    tokens = np.array([5, 3, 3, 9, 9, 1, 7, 7, 0])  # 3, 7, 9 tie at 2; 0, 1, 5 tie at 1
    v = build_vocab_mapping(tokens, 4, vocab_size=12)
    assert v.shortlist.tolist() == [3, 7, 9, 0]  # by count, ties by smaller id
    assert v.unk_index == 4 and v.num_classes == 5
    assert v(np.array([3, 7, 9, 0, 1, 5, 11])).tolist() == [0, 1, 2, 3, 4, 4, 4]
    assert v.to_full(np.array([0, 3, 4])).tolist() == [3, 0, -1]
    again = build_vocab_mapping(tokens[::-1], 4, vocab_size=12)  # order of the stream does not matter
    assert again.shortlist.tolist() == v.shortlist.tolist()


def test_vocab_mapping_unseen_ids_never_shortlisted():
    v = build_vocab_mapping(np.array([2, 2, 4]), 10, vocab_size=6)
    assert v.shortlist.tolist() == [2, 4] and v.unk_index == 2
    assert v(np.arange(6)).tolist() == [2, 2, 0, 2, 1, 2]


def test_vocab_mapping_errors():
    with pytest.raises(ValueError, match="token id 9 is >= vocab_size 5"):
        build_vocab_mapping(np.array([9]), 3, vocab_size=5)
    with pytest.raises(ValueError, match="stream is empty"):
        build_vocab_mapping(np.array([], np.int64), 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        build_vocab_mapping(np.array([1, 2]), 3, vocab_size=5)(np.array([6]))


def test_context_builder_dimensions_and_determinism(rng):
    cfg = ContextBuilderConfig(window_size=W, hidden_dim=H, hashed_dim=31, tail_tokens=L, stage1_target_dim=E)
    tokens, hidden = rng.integers(0, 50, (3, W)), rng.standard_normal((3, W, H))
    a, b = ContextBuilder(cfg).build(tokens, hidden), ContextBuilder(cfg).build(tokens, hidden)
    assert cfg.raw_dim == W * H + 31 + 2 * W
    assert a.context.shape == (3, cfg.raw_dim) and a.tail.shape == (3, L * H) and a.stage1_target.shape == (3, E)
    np.testing.assert_array_equal(a.context, b.context)
    np.testing.assert_array_equal(a.stage1_target, b.stage1_target)
    np.testing.assert_array_equal(a.context[:, :W * H], hidden.reshape(3, -1).astype(np.float32))
    assert a.context[:, W * H:W * H + 31].sum(axis=1).tolist() == [2 * (W - 1)] * 3  # bigrams x 2 hashes
    np.testing.assert_allclose(a.tail.reshape(3, L, H), hidden[:, -L:], rtol=1e-6)
    np.testing.assert_allclose(a.stage1_target, hidden[:, -1] @ ContextBuilder(cfg).target_projection, rtol=1e-5)


def test_context_builder_short_window_pads_tail_and_rejects_bad_shapes(rng):
    cfg = ContextBuilderConfig(window_size=3, hidden_dim=H, hashed_dim=8, tail_tokens=L, stage1_target_dim=E)
    out = ContextBuilder(cfg).build(rng.integers(0, 9, (2, 3)), rng.standard_normal((2, 3, H)))
    assert np.all(out.tail.reshape(2, L, H)[:, :L - 3] == 0)
    with pytest.raises(ValueError, match=r"expected \[N, W, H\] = \[N, 3, 24\]"):
        ContextBuilder(cfg).build(rng.integers(0, 9, (2, 4)), rng.standard_normal((2, 4, H)))
    with pytest.raises(ValueError, match="tail_tokens must be >= 1"):
        ContextBuilderConfig(window_size=3, hidden_dim=H, tail_tokens=0)
