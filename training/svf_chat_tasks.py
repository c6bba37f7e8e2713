"""Verifiable chat tasks for SVF experts on a real instruct model, generated from seeds (no download).

Three domains, each posed in natural language and rendered with the tokenizer's own chat template:

| domain | question (then "Answer with only ...") | answer |
| --- | --- | --- |
| numbers | "Which number is smaller, 47 or 74?" (larger or smaller, two-digit numbers) | `47` |
| letters | 'What is the last letter of the word "garden"?' (first or last letter) | `n` |
| sentiment | 'Is this review positive or negative? "The hotel room was dirty and rude."' | `negative` |

The conversation is a short system message ("Reply with only the answer."), one fixed demonstration turn of
the same domain (its question never occurs in any split) and the question: a zero-shot prompt is answered
in full sentences by small instruct models, which no strict checker can score. (Arithmetic word problems
were tried first: SmolLM2-135M-Instruct answers 0-9% of single-digit sums correctly with one or three
demonstrations, too close to 0 for an expert to amplify anything.) The checker is strict: the
reply, stripped of surrounding whitespace and of one final period, must equal the answer (letters and words
compared case-insensitively). Test questions are a fixed quarter of each domain's questions (a hash of the
question, `svf_tasks.is_test_prompt`); train and validation questions never come from it.

Letters draws its words from the English prose of the Python documentation shipped with the interpreter
(`pydoc_data.topics`: lowercase words of 4-9 letters occurring at least twice).

Task files (`load_task_file`): JSONL, one {"question": str, "answer": str} object per line (optionally
"domain"); a line that cannot be scored (missing or non-string fields, an empty answer, an answer holding a
newline, one question with two different answers) is refused with its line number.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from jaxmodels_training.svf_tasks import Example, is_test_prompt

SYSTEM = "Reply with only the answer."
DOMAINS = ("numbers", "letters", "sentiment")

_POSITIVE = ("wonderful", "excellent", "delicious", "friendly", "great", "lovely", "perfect", "amazing",
             "pleasant", "fantastic", "comfortable", "charming")
_NEGATIVE = ("terrible", "awful", "disgusting", "rude", "horrible", "boring", "broken", "dirty",
             "disappointing", "poor", "noisy", "cold")
_SUBJECTS = ("food", "service", "hotel room", "movie", "book", "phone", "staff", "concert", "coffee", "game",
             "bus ride", "museum")


class TaskFileError(ValueError):
    """A task file with lines that cannot be scored (each named by its line number)."""


def strict_match(completion: str, answer: str) -> float:
    """+1 if the reply (whitespace and one final period stripped) equals the answer, case-insensitively; else -1."""
    reply = completion.strip()
    if reply.endswith("."):
        reply = reply[:-1].rstrip()
    return 1.0 if reply.casefold() == answer.strip().casefold() else -1.0


@lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    """Lowercase words of 4-9 letters occurring at least twice in `pydoc_data.topics`, sorted."""
    from pydoc_data.topics import topics

    counts: dict[str, int] = {}
    for text in topics.values():
        for w in re.findall(r"\b[a-z]{4,9}\b", text):
            counts[w] = counts.get(w, 0) + 1
    return tuple(sorted(w for w, n in counts.items() if n >= 2))


def _numbers(rng) -> tuple[str, str]:
    a, b = (int(x) for x in rng.choice(np.arange(10, 100), 2, replace=False))
    if rng.random() < 0.5:
        return f"Which number is larger, {a} or {b}?", str(max(a, b))
    return f"Which number is smaller, {a} or {b}?", str(min(a, b))


def _letters(rng) -> tuple[str, str]:
    words = english_words()
    w = words[rng.integers(len(words))]
    if rng.random() < 0.5:
        return f'What is the first letter of the word "{w}"?', w[0]
    return f'What is the last letter of the word "{w}"?', w[-1]


def _sentiment(rng) -> tuple[str, str]:
    positive = bool(rng.random() < 0.5)
    pool = _POSITIVE if positive else _NEGATIVE
    i, j = rng.choice(len(pool), 2, replace=False)
    subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
    return (f'Is this review positive or negative? "The {subject} was {pool[i]} and {pool[j]}."',
            "positive" if positive else "negative")


@dataclasses.dataclass(frozen=True)
class ChatDomain:
    """name; draw(rng) -> (question, answer); the instruction appended to every question."""

    name: str
    draw: Callable[[np.random.Generator], tuple[str, str]]
    instruction: str

    def questions(self, n: int, seed: int) -> list[tuple[str, str]]:
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        return [self.draw(rng) for _ in range(n)]

    def demonstration(self) -> tuple[str, str]:
        """The fixed demonstration turn (drawn from a seed of its own); `split` never returns its question."""
        return self.draw(np.random.default_rng([2**31, zlib.crc32(self.name.encode())]))


CHAT_DOMAINS = {d.name: d for d in (
    ChatDomain("numbers", _numbers, "Answer with only the number."),
    ChatDomain("letters", _letters, "Answer with only the letter."),
    ChatDomain("sentiment", _sentiment, "Answer with one word: positive or negative."),
)}


def get_domain(name: str) -> ChatDomain:
    if name not in CHAT_DOMAINS:
        raise ValueError(f"unknown chat task domain {name!r}; available: {sorted(CHAT_DOMAINS)}")
    return CHAT_DOMAINS[name]


def messages(domain: ChatDomain, question: str) -> list[dict[str, str]]:
    demo_q, demo_a = domain.demonstration()
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{demo_q} {domain.instruction}"},
            {"role": "assistant", "content": demo_a},
            {"role": "user", "content": f"{question} {domain.instruction}"}]


def render(tokenizer, domain: ChatDomain, question: str) -> str:
    """The prompt text: the conversation through the tokenizer's chat template, ready for the reply."""
    return tokenizer.apply_chat_template(messages(domain, question), tokenize=False, add_generation_prompt=True)


def split(tokenizer, name: str, *, n_train: int, n_valid: int, n_test: int, seed: int = 0):
    """Disjoint (by question) train / valid / test lists of Examples with rendered prompts; test questions
    are `is_test_prompt` ones, train and valid never are, and the demonstration's question is in none."""
    domain = get_domain(name)
    seen = {domain.demonstration()[0]}
    pool, test = [], []
    for q, a in domain.questions(16 * (n_train + n_valid + n_test) + 256, seed):
        if q in seen:
            continue
        seen.add(q)
        (test if is_test_prompt(q) else pool).append((q, a))
    if len(pool) < n_train + n_valid or len(test) < n_test:
        raise ValueError(f"chat domain {name!r} has only {len(pool)} distinct train/valid questions and "
                         f"{len(test)} test questions here; {n_train + n_valid} and {n_test} were asked for")

    def examples(items):
        return [Example(render(tokenizer, domain, q), a, name, question=q) for q, a in items]

    return examples(pool[:n_train]), examples(pool[n_train:n_train + n_valid]), examples(test[:n_test])


def classification_messages(question: str, labels: Sequence[str]) -> list[dict[str, str]]:
    """Prompt-based routing: the model names the question's domain as \\boxed{label}."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Which kind of question is this: {', '.join(labels)}? Answer as "
                                        f"\\boxed{{kind}}.\nQuestion: {question}"}]


def load_task_file(path: str | Path) -> list[tuple[str, str, str]]:
    """A JSONL task file -> [(question, answer, domain)]; TaskFileError naming every unscorable line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFileError(f"task file {path}: cannot read it ({e})") from None
    items, problems, answers = [], [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {number}: not JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: expected an object with \"question\" and \"answer\"")
            continue
        q, a, d = row.get("question"), row.get("answer"), row.get("domain", "")
        if not isinstance(q, str) or not q.strip():
            problems.append(f"line {number}: \"question\" must be a non-empty string, got {q!r}")
        elif not isinstance(a, str) or not a.strip() or not isinstance(d, str):
            problems.append(f"line {number}: \"answer\" must be a non-empty string (and \"domain\" a string), "
                            f"got answer {a!r}: no reply can match it")
        elif any(c in a.strip() for c in "\n\r"):
            problems.append(f"line {number}: the answer {a!r} holds a line break, but a reply ends at the first one")
        elif q in answers and answers[q][1] != a:
            problems.append(f"line {number}: question also on line {answers[q][0]} with another answer "
                            f"({answers[q][1]!r} there, {a!r} here)")
        else:
            answers.setdefault(q, (number, a))
            items.append((q, a, d))
    if problems:
        raise TaskFileError(f"task file {path}: {len(problems)} unanswerable item(s): " + "; ".join(problems[:8])
                            + ("; ..." if len(problems) > 8 else ""))
    if not items:
        raise TaskFileError(f"task file {path}: no items (expected JSONL lines {{\"question\": ..., \"answer\": ...}})")
    return items


def file_split(tokenizer, items: Sequence[tuple[str, str, str]], *, n_train: int, n_valid: int, n_test: int,
               seed: int = 0, source: str | Path = "task file"):
    """A task file's items -> disjoint train / valid / test Examples (test: `is_test_prompt` questions), each
    question asked as it is, after the system message, through the chat template; seeded order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    pool = [items[i] for i in order if not is_test_prompt(items[i][0])]
    test = [items[i] for i in order if is_test_prompt(items[i][0])]
    if len(pool) < n_train + n_valid or len(test) < n_test:
        raise TaskFileError(f"task file {source}: {len(pool)} train/valid and {len(test)} test questions (a quarter "
                            f"is held out by hash); {n_train + n_valid} and {n_test} were asked for")

    def examples(chosen):
        return [Example(tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM},
                                                       {"role": "user", "content": q}],
                                                      tokenize=False, add_generation_prompt=True),
                        a, d or Path(str(source)).stem, question=q) for q, a, d in chosen]

    return examples(pool[:n_train]), examples(pool[n_train:n_train + n_valid]), examples(test[:n_test])
