import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels.htfr import HTFRConfig
from jaxmodels.htft import (ContextBuilder, ContextBuilderConfig, HTFTCheckpoint, HTFTTrainer,
                            HypertensorFieldTransformer, StageSpec, build_vocab_mapping, load_htft_checkpoint,
                            save_htft_checkpoint, teacher_truncated_nll)

W, H, L, E, C = 7, 11, 3, 5, 13


@pytest.fixture
def setup(rng):
    cfg = ContextBuilderConfig(window_size=W, hidden_dim=H, hashed_dim=32, tail_tokens=L, stage1_target_dim=E)
    tokens = rng.integers(0, 40, (17, W))
    batch = ContextBuilder(cfg).build(tokens, rng.standard_normal((17, W, H)))
    return cfg, tokens, batch, make_model(cfg), rng.integers(0, C, 17)


def make_model(cfg):
    field = HTFRConfig(top_k=4, train_top_k=8, chunk_size=8)
    return HypertensorFieldTransformer.create(cfg.raw_dim, cfg.tail_dim, E, C, StageSpec(19, 128, 64, field),
                                              StageSpec(23, 32, 16, field, tau=0.8), seed=17)


def test_step_shapes_and_diagnostics(setup):
    cfg, _, batch, model, labels = setup
    logits, emb = model.step(batch.context[:4], batch.tail[:4], labels[:4], batch.stage1_target[:4], train=True)
    assert logits.shape == (4, C) and emb.shape == (4, E)
    logits, emb = model.step(batch.context[:2], batch.tail[:2], labels[:2], batch.stage1_target[:2], train=False)
    assert logits.shape == (2, C)
    diag = model.diagnostics()
    assert set(diag) == {"stage1", "stage2"} and diag["stage1"]["tensors"] == 19 and diag["stage2"]["tensors"] == 23
    with pytest.raises(ValueError, match=r"tail of shape \(2, 4\), expected \[2, 33\]"):
        model.step(batch.context[:2], np.zeros((2, 4)), labels[:2], batch.stage1_target[:2])


def test_batched_step_equals_one_sample_loop(setup):
    cfg, _, batch, model, labels = setup
    twin = make_model(cfg)
    ref = [twin.step(batch.context[i:i + 1], batch.tail[i:i + 1], labels[i:i + 1], batch.stage1_target[i:i + 1])[0]
           for i in range(6)]
    got, _ = model.step(batch.context[:6], batch.tail[:6], labels[:6], batch.stage1_target[:6])
    np.testing.assert_allclose(got, np.concatenate(ref), atol=1e-5)


def test_trainer_metrics_and_checkpoint_round_trip(setup, tmp_path):
    cfg, tokens, batch, model, labels = setup
    tr = HTFTTrainer(model, chunk=5)
    m = tr.train(batch, labels)
    assert m["samples"] == 17 and np.isclose(m["ppl"], np.exp(m["loss"])) and m["stage1_loss"] > 0
    vocab = build_vocab_mapping(tokens.reshape(-1), 12, vocab_size=40)
    path = tmp_path / "h.npz"
    save_htft_checkpoint(path, HTFTCheckpoint(model, vocab, cfg, {"step": 17}))
    ck = load_htft_checkpoint(path)
    assert ck.metadata == {"step": 17} and ck.context_config == cfg
    np.testing.assert_array_equal(ck.vocab.shortlist, vocab.shortlist)
    np.testing.assert_array_equal(ck.model.predict(batch.context, batch.tail), model.predict(batch.context, batch.tail))
    # training continues identically from the loaded state
    a = HTFTTrainer(ck.model).train(batch, labels)["loss"]
    assert a == HTFTTrainer(model).train(batch, labels)["loss"]
    orig = tmp_path / "orig.npz"
    save_htft_checkpoint(orig, HTFTCheckpoint(model, vocab, cfg, {}), original_layout=True)
    ck2 = load_htft_checkpoint(orig)
    assert ck2.model.stage2.model.interpolations == model.stage2.model.interpolations
    np.testing.assert_allclose(ck2.model.predict(batch.context, batch.tail), model.predict(batch.context, batch.tail),
                               atol=0.05)


def test_teacher_truncated_nll():
    logits = np.log(np.array([[0.5, 0.2, 0.3]]))
    nll = teacher_truncated_nll(logits, np.array([2]), np.array([1]))  # "other" = 0.7
    np.testing.assert_allclose(nll, -np.log([0.7]))
    np.testing.assert_allclose(teacher_truncated_nll(logits, np.array([2]), np.array([0])), -np.log([0.3]))


def test_predict_flops_written_out():
    """Stage 1: raw R = W*H + 32 + 2W -> CountSketch 128 -> SRHT 64 (one tile of P = 128); 19 tensors -> E.
    Stage 2: E + L*H = 38 -> CountSketch 32 -> SRHT 16 (P = 32); 23 tensors -> C. top_k 4."""
    model = make_model(ContextBuilderConfig(window_size=W, hidden_dim=H, hashed_dim=32, tail_tokens=L,
                                            stage1_target_dim=E))
    r = W * H + 32 + 2 * W
    want = {"stage1_projection": 2 * r + (128 + 128 * 7) + 64 + 3 * 64,
            "stage1_field": 2 * 19 * 64 + 19 + 6 * 4 * E,
            "stage2_projection": 2 * (E + L * H) + (32 + 32 * 5) + 16 + 3 * 16,
            "stage2_field": 2 * 23 * 16 + 23 + 6 * 4 * C}
    assert model.predict_flops() == {**want, "total": sum(want.values())}
