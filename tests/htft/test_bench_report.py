"""The pieces of `python -m benchmarks htft --teacher DIR`: the offline English corpus and the report (rows over
seeds, gap closed in nats, FLOPs and timings, the learning-curve chart), on made-up runs."""

import json
import math
import types

import pytest

from jaxmodels_benchmarks import harness
from jaxmodels_benchmarks.suites import _htft_corpus, _htft_report


def test_corpus_is_prose_with_held_out_topics(tmp_path):
    assert _htft_corpus.is_prose("The object must be an iterable with the same number of items as there are targets.")
    for code in ("   for_stmt ::= \"for\" target_list \"in\" starred_list \":\" suite",
                 ">>> x = [1, 2, 3]\n>>> x[0]", "Dictionaries\n************", "x = f(a[0], b[1]) + {c: d}"):
        assert not _htft_corpus.is_prose(code), code
    train, held, source = _htft_corpus.write_corpus(tmp_path / "english.txt")
    assert (tmp_path / "english.txt").read_text() == train + "\n\n" + held
    assert "pydoc_data/topics.py" in source and len(train) > 5 * len(held) > 100_000
    assert ">>>" not in train + held and "::=" not in train + held
    topics = list(_htft_corpus.topics().values())
    assert topics[4] in held and topics[4] not in train and topics[0] in train


def fake_run(seed, final_ppl):
    metrics = [{"step": s, "train_ppl": 90.0 - s / 10, "eval_ppl": p, "teacher_ppl": 20.0, "unigram_ppl": 100.0,
                "samples_per_s": 1000.0} for s, p in ((100, 60.0), (200, final_ppl))]
    return {"seconds": 5.0 + seed, "capture": "cached", "metrics": metrics, "args": types.SimpleNamespace()}


def test_report_rows_gap_over_seeds_and_chart(tmp_path, monkeypatch):
    monkeypatch.setenv(harness.RESULTS_ENV, str(tmp_path))
    runs = {17: fake_run(17, 40.0), 18: fake_run(18, 50.0), 19: fake_run(19, 45.0)}
    t_flops = {"matmul_params": 100, "weights": 200, "attention": 10, "lm_head": 60, "total": 210}
    s_flops = {"total": 7}
    secs = {"teacher": 0.64, "teacher_head": 0.05, "student_build": 0.1, "student_predict": 0.3, "student": 0.4}
    corpus = {"name": "prose", "source": "here", "train_tokens": 1000, "eval_tokens": 200, "split": "by topic",
              "eval_windows": 64, "train_windows": 100, "epochs": 2}
    teacher = {"name": "tiny", "vocab_size": 300}
    _htft_report.report("htft-teacher-test", runs=runs, corpus=corpus, teacher=teacher, t_flops=t_flops,
                        s_flops=s_flops, secs=secs, batch=64, window=16, teacher_full_nll=3.5, classes=33,
                        settings=["--seed", "17"], extra_notes=["extra"], ckpt_meta={})
    out = json.loads((tmp_path / "htft-teacher-test.json").read_text())
    gaps = [(math.log(100) - math.log(p)) / (math.log(100) - math.log(20)) for p in (40.0, 50.0, 45.0)]
    assert out["results"]["gap_closed_per_seed"] == pytest.approx(gaps)
    assert out["results"]["gap_closed_mean"] == pytest.approx(sum(gaps) / 3)
    rows = {r["model"]: r for r in out["rows"]}
    assert rows["student, mean over 3 seeds"]["FLOPs/token"] == 7
    assert rows["student end to end (teacher hidden states + student)"]["FLOPs/token"] == 217
    assert rows["teacher, truncated (shortlist + other)"]["ms/token"] == pytest.approx(1e3 * 0.64 / (64 * 16))
    md = (tmp_path / "htft-teacher-test.md").read_text()
    assert "closes" in md and "does not pay for itself" in md and "extra" in md
    assert "100 windows of 16 tokens in 2 online passes (200 windows seen)" in md
    assert (tmp_path / "htft-teacher-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
