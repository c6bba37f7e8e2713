"""The training CLI end to end on a tiny random Gemma 3 teacher: metrics, checkpoint, resume, bad input."""

import json

import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")
pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

from jaxmodels_interop.teacher import HFTeacher, generate_greedy
from jaxmodels.htft import HTFTTrainer, load_htft_checkpoint
from jaxmodels_training import htft

TINY = ["--train-tokens", "300", "--eval-tokens", "120", "--seq-len", "12", "--stride", "6", "--stage1-tensors", "24",
        "--stage2-tensors", "32", "--stage1-countsketch-dim", "256", "--stage2-countsketch-dim", "64",
        "--stage1-srht-dim", "128", "--stage2-srht-dim", "32", "--stage1-target-dim", "8", "--tail-tokens", "3",
        "--hashed-dim", "64", "--vocab-limit", "20", "--top-k", "4", "--train-top-k", "8", "--eval-every", "16",
        "--chunk", "8"]


def argv(teacher_dir, corpus_file, out, *extra):
    return ["--model", str(teacher_dir), "--data", str(corpus_file), "--output", str(out / "htft.npz"),
            "--cache-dir", str(out.parent / "cache"), *TINY, *extra]


def lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_cli_trains_writes_metrics_and_checkpoint_and_resumes(teacher_dir, corpus_file, tmp_path, monkeypatch):
    full = tmp_path / "full"
    htft.main(argv(teacher_dir, corpus_file, full))
    records = lines(full / "htft.jsonl")
    assert [r["step"] for r in records] == [16, 32, 48]
    last = records[-1]
    for key in ("train_ppl", "eval_ppl", "teacher_ppl", "unigram_ppl", "stage1_loss", "samples_per_s"):
        assert np.isfinite(last[key]) and last[key] > 0
    ck = load_htft_checkpoint(full / "htft.npz")
    assert ck.metadata["step"] == 48 and ck.model.num_classes == ck.vocab.num_classes <= 21
    assert ck.context_config.window_size == 12 and ck.context_config.hidden_dim == 24
    ids, text = generate_greedy(HFTeacher(teacher_dir), ck, "the quick", 3)
    assert ids.shape == (3,) and set(ids.tolist()) <= set(ck.vocab.shortlist.tolist()) and isinstance(text, str)

    # interrupted after the first evaluation, then resumed: the same metrics as the uninterrupted run
    part = tmp_path / "part"
    original = HTFTTrainer.evaluate
    calls = []

    def crash_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(HTFTTrainer, "evaluate", crash_second)
    with pytest.raises(KeyboardInterrupt):
        htft.main(argv(teacher_dir, corpus_file, part))
    monkeypatch.setattr(HTFTTrainer, "evaluate", original)
    assert [r["step"] for r in lines(part / "htft.jsonl")] == [16]
    htft.main(argv(teacher_dir, corpus_file, part, "--resume"))
    resumed = lines(part / "htft.jsonl")
    assert [r["step"] for r in resumed] == [16, 32, 48]
    for a, b in zip(resumed, records):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-6)


def test_cli_refuses_bad_runs_and_keeps_what_exists(teacher_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    htft.main(argv(teacher_dir, corpus_file, out, "--eval-every", "0"))
    before = (out / "htft.npz").read_bytes(), (out / "htft.jsonl").read_text()
    with pytest.raises(SystemExit, match="htft.npz already exists; pass --resume"):
        htft.main(argv(teacher_dir, corpus_file, out))
    with pytest.raises(SystemExit, match=r"another configuration \(seed: checkpoint has 17, now 3\)"):
        htft.main(argv(teacher_dir, corpus_file, out, "--resume", "--seed", "3", "--eval-every", "0"))
    assert ((out / "htft.npz").read_bytes(), (out / "htft.jsonl").read_text()) == before
    with pytest.raises(SystemExit, match=r"corpus too small: --data holds \d+ tokens, fewer than --train-tokens "
                                         r"100000 \+ --eval-tokens 120"):
        htft.main(argv(teacher_dir, corpus_file, tmp_path / "small", "--train-tokens", "100000"))
    with pytest.raises(SystemExit, match="--seq-len 80 exceeds the teacher's maximum of 64 positions"):
        htft.main(argv(teacher_dir, corpus_file, tmp_path / "long", "--seq-len", "80"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(SystemExit, match="no config.json there"):
        htft.main(["--model", str(tmp_path / "not-a-model"), "--data", str(corpus_file), "--output",
                   str(tmp_path / "x.npz")])


def test_cli_reads_a_local_dataset_offline(teacher_dir, tmp_path, monkeypatch):
    """--dataset DIR: the train and validation splits of local data files through `datasets`, with no network."""
    from tests.htft.conftest import CORPUS

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": CORPUS[i:i + 500]}) + "\n"
                                              for i in range(0, 2000, 500)))
    (data / "validation.jsonl").write_text(json.dumps({"text": CORPUS[2000:]}) + "\n")
    out = tmp_path / "run"
    args = ["--model", str(teacher_dir), "--dataset", str(data), "--output", str(out / "htft.npz"), *TINY]
    htft.main(args)
    assert [r["step"] for r in lines(out / "htft.jsonl")] == [16, 32, 48]
    with pytest.raises(SystemExit, match=r"--dataset .*ds: \d+ train / \d+ validation tokens, fewer than "
                                         r"--train-tokens 100000"):
        htft.main([*args, "--force", "--train-tokens", "100000"])
    (data / "validation.jsonl").rename(data / "test.jsonl")
    with pytest.raises(SystemExit, match=r"--dataset .*ds: .*Unknown split \"validation\""):
        htft.main([*args, "--force"])
    with pytest.raises(SystemExit, match="give the corpus once"):
        htft.main([*args, "--force", "--data", str(data / "train.jsonl")])


def test_cli_epochs_repeat_the_windows_in_order(teacher_dir, corpus_file, tmp_path):
    out = tmp_path / "epochs"
    htft.main(argv(teacher_dir, corpus_file, out, "--epochs", "2", "--eval-every", "32"))
    records = lines(out / "htft.jsonl")
    assert [r["step"] for r in records] == [32, 64, 96]  # 48 windows a pass; the second evaluation spans both
    assert load_htft_checkpoint(out / "htft.npz").metadata["step"] == 96
    with pytest.raises(SystemExit, match="--epochs must be >= 1, got 0"):
        htft.main(argv(teacher_dir, corpus_file, tmp_path / "zero", "--epochs", "0"))
