"""jaxmodels.generate: greedy equals an argmax loop, left padding, EOS, sampling determinism, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmodels import Hyformer, HyformerConfig, generate

CFG = HyformerConfig.tiny(max_seq_len=37)


@pytest.fixture(scope="module")
def model():
    return Hyformer.from_config(CFG, seed=4)


def test_greedy_matches_full_forward_argmax(model):
    """Each generated token is the argmax of a full (uncached) forward pass over everything before it."""
    prompt = np.random.RandomState(0).randint(0, 17, (2, 5))
    out = np.asarray(generate(model, prompt, 9))
    assert out.shape == (2, 14)
    np.testing.assert_array_equal(out[:, :5], prompt)
    logits = np.asarray(model(jnp.asarray(out), "lm").logits)  # causal: position t sees tokens <= t only
    np.testing.assert_array_equal(out[:, 5:], logits[:, 4:13].argmax(-1))


def test_left_padded_batch_equals_each_row_alone(model):
    rng = np.random.RandomState(1)
    a, b = rng.randint(0, 17, (1, 7)), rng.randint(0, 17, (1, 4))
    batch = np.concatenate([a, np.concatenate([np.zeros((1, 3), int), b], 1)])
    mask = np.ones_like(batch)
    mask[1, :3] = 0
    out = np.asarray(generate(model, batch, 8, attention_mask=mask))
    np.testing.assert_array_equal(out[0], np.asarray(generate(model, a, 8))[0])
    np.testing.assert_array_equal(out[1, 3:], np.asarray(generate(model, b, 8))[0])


def test_eos_stops_and_pads(model):
    prompt = np.random.RandomState(0).randint(0, 17, (2, 5))
    free = np.asarray(generate(model, prompt, 9))
    eos = int(free[0, 7])  # the third generated token of row 0
    out = np.asarray(generate(model, prompt, 9, eos_token_id=eos, pad_token_id=16))
    first = 5 + list(free[0, 5:]).index(eos)
    np.testing.assert_array_equal(out[0, :first + 1], free[0, :first + 1])
    assert np.all(out[0, first + 1:] == 16)
    several = np.asarray(generate(model, prompt, 9, eos_token_id=[int(free[1, 6]), eos], pad_token_id=16))
    np.testing.assert_array_equal(several[0], out[0])  # a list of EOS ids stops on any of them
    first = 5 + list(free[1, 5:]).index(int(free[1, 6]))
    assert np.all(several[1, first + 1:] == 16)


def test_sampling_is_seeded(model):
    prompt = np.zeros((3, 2), int)
    a = np.asarray(generate(model, prompt, 12, temperature=1.3, seed=5))
    b = np.asarray(generate(model, prompt, 12, temperature=1.3, seed=5))
    c = np.asarray(generate(model, prompt, 12, temperature=1.3, seed=6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = np.asarray(generate(model, prompt, 12))
    np.testing.assert_array_equal(np.asarray(generate(model, prompt, 12, temperature=1.0, top_k=1, seed=9)), greedy)
    tiny_p = np.asarray(generate(model, prompt, 12, temperature=1.0, top_p=1e-6, seed=9))
    np.testing.assert_array_equal(tiny_p, greedy)


def test_top_k_restricts_the_support(model):
    """With top_k=2, every sampled token is one of the two most likely under the model."""
    prompt = np.random.RandomState(2).randint(0, 17, (4, 3))
    out = np.asarray(generate(model, prompt, 6, temperature=5.0, top_k=2, seed=1))
    top2 = np.argsort(-np.asarray(model(jnp.asarray(out), "lm").logits), axis=-1)[:, :, :2]  # [B, T, 2]
    for t in range(3, 9):
        assert all(out[r, t] in top2[r, t - 1] for r in range(4))


@pytest.mark.parametrize("kw, message", [
    (dict(max_new_tokens=40), "prompt length 3 \\+ max_new_tokens 40 exceeds the model's max_seq_len 37"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=2, top_k=0, temperature=1.0), r"top_k must lie in \[1, 17\]"),
    (dict(max_new_tokens=2, top_p=1.5, temperature=1.0), r"top_p must lie in \(0, 1\]"),
    (dict(max_new_tokens=2, temperature=-1.0), "temperature must be >= 0"),
    (dict(max_new_tokens=2, attention_mask=np.array([[1, 1, 0]])), "generation needs left padding"),
])
def test_generate_errors(model, kw, message):
    with pytest.raises(ValueError, match=message):
        generate(model, np.array([[1, 2, 3]]), **kw)


def test_generate_rejects_out_of_vocab(model):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 17\)"):
        generate(model, np.array([[1, 20]]), 2)


@pytest.mark.parametrize("settings", [{}, dict(temperature=1.3, top_k=9, seed=3)], ids=["greedy", "sampled"])
@pytest.mark.parametrize("bucket", [16, 64])  # 64: more than max_seq_len 37 allows, so the padding is clamped
def test_bucketed_shapes_give_the_exact_shapes_tokens(model, settings, bucket):
    rng = np.random.RandomState(3)
    for t, new in ((5, 9), (11, 1)):
        prompt = rng.randint(0, 17, (2, t))
        exact = np.asarray(generate(model, prompt, new, bucket=None, **settings))
        bucketed = np.asarray(generate(model, prompt, new, bucket=bucket, **settings))
        assert bucketed.shape == exact.shape == (2, t + new)
        np.testing.assert_array_equal(bucketed, exact)


def test_bucketed_left_padded_batch_and_eos(model):
    """The caller's own left padding and an EOS stop come out as with exact shapes."""
    batch = np.array([[0, 0, 3, 9, 4], [5, 1, 8, 2, 7]])
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    free = np.asarray(generate(model, batch, 9, attention_mask=mask, bucket=None))
    eos = int(free[0, 7])
    kw = dict(attention_mask=mask, eos_token_id=eos, pad_token_id=16)
    np.testing.assert_array_equal(np.asarray(generate(model, batch, 9, bucket=16, **kw)),
                                  np.asarray(generate(model, batch, 9, bucket=None, **kw)))


def test_lengths_in_one_bucket_compile_once():
    """Two prompt lengths and two token budgets within one bucket share one compiled program; exact shapes
    compile once per (prompt length, max_new_tokens)."""
    from jaxmodels.generate import _generate

    model = Hyformer.from_config(HyformerConfig.tiny(max_seq_len=41), seed=11)  # compiled by no other test
    rng = np.random.RandomState(4)
    cases = ((5, 9), (11, 12), (16, 3))  # all within one bucket of 16
    jitted = _generate.jitted()
    before = jitted._cache_size()
    for t, new in cases:
        generate(model, rng.randint(0, 17, (1, t)), new, bucket=16)
    assert jitted._cache_size() - before == 1
    for t, new in cases:
        generate(model, rng.randint(0, 17, (1, t)), new, bucket=None)
    assert jitted._cache_size() - before == 1 + len(cases)


@pytest.mark.parametrize("bucket", [0, -4, 2.5, True])
def test_generate_rejects_bad_buckets(model, bucket):
    with pytest.raises(ValueError, match="bucket must be a positive int or None"):
        generate(model, np.array([[1, 2, 3]]), 2, bucket=bucket)
