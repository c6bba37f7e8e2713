"""The chat task domains of training.svf_chat_tasks: disjoint seeded splits large enough for 256 test questions,
correct answers, the strict checker, and task files whose unanswerable lines are refused by number."""

import re

import pytest

from jaxmodels_training.svf_chat_tasks import (CHAT_DOMAINS, DOMAINS, TaskFileError, file_split, get_domain,
                                               load_task_file, messages, split, strict_match)
from jaxmodels_training.svf_tasks import is_test_prompt


class ListTemplate:
    """A stand-in chat template: role: content lines, then "assistant:" for the reply."""

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=True):
        assert not tokenize
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + ("assistant:" if add_generation_prompt else "")


def expected_answer(domain: str, question: str) -> str:
    if domain == "numbers":
        a, b = map(int, re.findall(r"\d+", question))
        return str(max(a, b) if "larger" in question else min(a, b))
    if domain == "letters":
        word = re.search(r'"(\w+)"', question).group(1)
        return word[0] if "first" in question else word[-1]
    adjectives = re.search(r"was (\w+) and (\w+)\.", question).groups()
    positive = {"wonderful", "excellent", "delicious", "friendly", "great", "lovely", "perfect", "amazing",
                "pleasant", "fantastic", "comfortable", "charming"}
    assert all(a in positive for a in adjectives) or not any(a in positive for a in adjectives)
    return "positive" if adjectives[0] in positive else "negative"


@pytest.mark.parametrize("domain", DOMAINS)
def test_splits_are_disjoint_seeded_and_correct(domain):
    tok = ListTemplate()
    train, valid, test = split(tok, domain, n_train=256, n_valid=32, n_test=256, seed=0)
    assert (len(train), len(valid), len(test)) == (256, 32, 256)
    questions = [{e.question for e in part} for part in (train, valid, test)]
    assert [len(q) for q in questions] == [256, 32, 256]  # no repeats within a split
    assert not (questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2])
    demo = get_domain(domain).demonstration()[0]
    assert all(demo not in q for q in questions)
    assert all(is_test_prompt(q) for q in questions[2]) and not any(is_test_prompt(q) for q in questions[0])
    for e in train[:50] + test[:50]:
        assert e.answer == expected_answer(domain, e.question), e
        assert e.domain == domain and e.prompt.endswith(f"user: {e.question} {CHAT_DOMAINS[domain].instruction}\n"
                                                        "assistant:")
    again = split(tok, domain, n_train=256, n_valid=32, n_test=256, seed=0)
    assert [e.prompt for e in again[2]] == [e.prompt for e in test]
    assert [e.question for e in split(tok, domain, n_train=8, n_valid=0, n_test=0, seed=1)[0]] != \
        [e.question for e in train[:8]]


def test_the_conversation_has_a_system_message_and_one_demonstration():
    d = get_domain("sentiment")
    roles = [m["role"] for m in messages(d, "Is this review positive or negative? \"x\"")]
    assert roles == ["system", "user", "assistant", "user"]
    assert messages(d, "q")[2]["content"] == d.demonstration()[1]


@pytest.mark.parametrize("reply, answer, reward", [
    ("12", "12", 1.0), (" 12.\n", "12", 1.0), ("Positive", "positive", 1.0), ("N", "n", 1.0),
    ("12 apples", "12", -1.0), ("The answer is 12", "12", -1.0), ("", "12", -1.0), ("12..", "12", -1.0),
    ("negative", "positive", -1.0)])
def test_strict_match(reply, answer, reward):
    assert strict_match(reply, answer) == reward


def test_a_task_file_with_unanswerable_items_is_refused_by_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join([
        '{"question": "2+2?", "answer": "4"}',
        '{"question": "no answer"}',
        '{"question": "empty", "answer": "  "}',
        'not json',
        '{"question": "two lines", "answer": "a\\nb"}',
        '{"question": "2+2?", "answer": "5"}',
        '["a list"]',
    ]) + "\n")
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    msg = str(err.value)
    assert msg.startswith(f"task file {path}: 6 unanswerable item(s): line 2: \"answer\" must be a non-empty string")
    for expected in ["line 3: \"answer\"", "line 4: not JSON", "line 5: the answer 'a\\nb' holds a line break",
                     "line 6: question also on line 1 with another answer ('4' there, '5' here)",
                     "line 7: expected an object"]:
        assert expected in msg, (expected, msg)
    path.write_text("\n\n")
    with pytest.raises(TaskFileError, match="no items"):
        load_task_file(path)


def test_task_file_split(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"question": "What is {i} plus 1?", "answer": "{i + 1}"}}\n' for i in range(200)))
    items = load_task_file(path)
    train, valid, test = file_split(ListTemplate(), items, n_train=100, n_valid=20, n_test=30, seed=0, source=path)
    assert not ({e.question for e in train + valid} & {e.question for e in test})
    assert all(is_test_prompt(e.question) for e in test) and train[0].domain == "t"
    with pytest.raises(TaskFileError, match=r"questions \(a quarter is held out by hash\); 250 and 0 were asked"):
        file_split(ListTemplate(), items, n_train=250, n_valid=0, n_test=0, source=path)
