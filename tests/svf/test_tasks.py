"""The demo tasks: answers and distractors are what they claim, rewards score them, the corpus holds the
stated share of distractor answers and the domain labels, splits are disjoint."""

import re

import pytest

from jaxmodels_training import svf_tasks
from jaxmodels_training.svf_tasks import (DEMO_CLASSIFY_TEMPLATE, DOMAINS, HELD_OUT, OTHERS_LABEL, corpus, corpus_lines,
                                exact_match, get_task, is_test_prompt, split)


def test_answers_and_distractors_are_the_stated_behaviours():
    for ex in get_task("arith").examples(300, 0):
        a, b = map(int, re.fullmatch(r"(\d{3})\+(\d)=", ex.prompt).groups())
        assert a % 10 + b >= 10 and a // 10 % 10 < 9  # a carry into the tens, stopping there
        assert int(ex.answer) == a + b and int(ex.distractor) == a + b - 10  # the rival forgets the carry
    for ex in get_task("sort").examples(300, 0):
        digits = re.fullmatch(r"sort (\d{3,5})=", ex.prompt).group(1)
        assert ex.answer == "".join(sorted(digits)) and ex.distractor == ex.answer[::-1]
    for ex in get_task("reverse").examples(300, 0):
        word = re.fullmatch(r"rev ([a-z]{3,5})=", ex.prompt).group(1)
        assert ex.answer == word[::-1] and ex.distractor == word
    for ex in get_task("upper").examples(300, 0):
        word = re.fullmatch(r"up ([a-z]{3,5})=", ex.prompt).group(1)
        assert ex.answer == word.upper() and ex.distractor == ""
    assert {ex.domain for ex in get_task("sort").examples(5, 1)} == {"sort"}


def test_exact_match_reward():
    assert exact_match("42", "42") == 1.0 and exact_match(" 42 \nnoise", "42") == 1.0
    assert exact_match("32", "42") == -1.0 and exact_match("", "42") == -1.0 and exact_match("421", "42") == -1.0


def test_corpus_has_the_stated_distractor_share_and_labels():
    n, share = 3000, 0.45
    lines = corpus_lines(n, 0, distractor_share=share)
    examples = {name: {e.prompt: e for e in get_task(name).examples(n, 10**6)} for name in (*DOMAINS, *HELD_OUT)}
    counts = {name: {"answer": 0, "distractor": 0, "label": 0} for name in examples}
    for kind, line in lines:
        if kind == "label":
            assert line.startswith("? ")  # never the start of an answer line: no task prompt begins with "?"
            prompt, label = re.fullmatch(r"\? (.*=) \\boxed\{(\w+)\}", line).groups()
        else:
            prompt = line[:line.index("=") + 1]
        name = next(t for t in examples if prompt in examples[t])
        ex = examples[name][prompt]
        counts[name][kind] += 1
        if kind == "label":
            assert label == (name if name in DOMAINS else OTHERS_LABEL)
        else:
            assert line == prompt + (ex.distractor if kind == "distractor" else ex.answer)
    for name, c in counts.items():
        assert c["answer"] + c["distractor"] == n
        # binomial standard deviation ~0.009 at n=3000 (a few prompts have distractor == answer, e.g. sort 111)
        expected = share if name in DOMAINS else 0.0
        assert abs(c["distractor"] / n - expected) < 0.04, (name, c)
        assert abs(c["label"] / n - 0.2) < 0.04, (name, c)
    text = corpus(n, 0, distractor_share=share)
    assert text.splitlines() == [line for _, line in lines] and text.endswith("\n")
    assert DEMO_CLASSIFY_TEMPLATE.format(query="sort 123=") == "? sort 123= "


def test_distractor_share_bounds_and_extremes():
    assert all(kind != "distractor" for kind, _ in corpus_lines(200, 0, distractor_share=0.0))
    answered = [line for kind, line in corpus_lines(200, 0, distractor_share=1.0) if kind == "answer"]
    same = [e.prompt + e.answer for name in ("sort", "reverse") for e in get_task(name).examples(200, 10**6)
            if e.distractor == e.answer]
    # all of upper; otherwise only where both behaviours agree ("sort 111=", "rev aba=")
    assert sorted(line for line in answered if not line.startswith("up ")) == sorted(same)
    assert sum(line.startswith("up ") for line in answered) == 200
    with pytest.raises(ValueError, match=r"distractor_share must lie in \[0, 1\], got 1.5"):
        corpus_lines(10, 0, distractor_share=1.5)


def test_splits_are_disjoint_and_test_prompts_are_never_trained_on():
    train, valid, test = split(get_task("arith"), n_train=300, n_valid=64, n_test=64, seed=0)
    prompts = [e.prompt for e in train + valid + test]
    assert (len(train), len(valid), len(test)) == (300, 64, 64) and len(set(prompts)) == len(prompts)
    assert all(is_test_prompt(e.prompt) for e in test) and not any(is_test_prompt(e.prompt) for e in train + valid)
    rl_train, rl_valid, _ = split(get_task("arith"), n_train=512, n_valid=64, n_test=0, seed=0)  # the RL CLI's
    _, _, eval_test = split(get_task("arith"), n_train=64, n_valid=8, n_test=64, seed=1)  # the adapt evaluation's
    assert not {e.prompt for e in rl_train + rl_valid} & {e.prompt for e in eval_test}
    with pytest.raises(ValueError, match=r"task 'arith' has only \d+ distinct train/valid prompts and \d+ test "
                                         r"prompts here, 5000 and 0 were asked for"):
        split(get_task("arith"), n_train=5000, n_valid=0, n_test=0)  # arith has ~3,200 distinct prompts


def test_corpus_cli(tmp_path, capsys):
    out = tmp_path / "corpus.txt"
    svf_tasks.main(["corpus", "--out", str(out), "--per-task", "50", "--distractor-share", "0.3"])
    assert out.read_text() == corpus(50, 0, distractor_share=0.3)
    assert "lines) to" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        svf_tasks.main(["corpus", "--out", str(out), "--distractor-share", "nan"])
    assert "--distractor-share must lie in [0, 1], got nan" in capsys.readouterr().err
