"""Self-contained tasks with verifiable answers for SVF experts: `python -m training.svf_tasks corpus ...`.

Each task draws examples from a seed: a prompt such as "137+5=", its answer "142" and, for the expert
domains, a plausible wrong answer (the distractor) produced by a rival behaviour:

| task | prompt | answer | distractor (rival behaviour) |
| --- | --- | --- | --- |
| arith | `137+5=` (3 digits plus a digit, with a carry) | `142` | `132` (forgets the carry) |
| reverse | `rev abcde=` (3-5 letters) | `edcba` | `abcde` (copies instead) |
| sort | `sort 52819=` (3-5 digits) | `12589` | `98521` (sorts descending) |
| upper | `up abcd=` (3-5 letters) | `ABCD` | none |

A model answers with the text up to the first newline; the default reward is +1 for an exact match and -1
otherwise (the official Transformer² rewards). `corpus` writes the pretraining text of the demo decoder that
`training.hyformer` trains: every prompt of an expert domain is answered by its distractor on a share of
the lines (default 45%) and correctly on the rest, so the base model has learnt both behaviours and picks
the right one only part of the time; SVF experts can then amplify the right behaviour (they rescale what
the base has learnt, they cannot teach new abilities). "upper" is always answered correctly and has no
expert: it stands for the tasks the experts were not made for. Domain labels are taught by
"? prompt \\boxed{name}" lines (`\\boxed{others}` for upper), for prompt-based routing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import string
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxmodels.io import atomic_write_text

STOP = "\n"
# The demo's classification prompt: short enough for a byte-level decoder, and distinct from the task prompt
# from its first byte (so the base never starts a label where an answer belongs); the answer is \boxed{domain}.
DEMO_CLASSIFY_TEMPLATE = "? {query} "
OTHERS_LABEL = "others"  # the label the corpus teaches for tasks without an expert

Reward = Callable[[str, str], float]


def exact_match(completion: str, answer: str) -> float:
    """+1 if the completion (up to the first newline, stripped) equals the answer, else -1."""
    return 1.0 if completion.split(STOP, 1)[0].strip() == answer.strip() else -1.0


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    domain: str
    distractor: str = ""  # the rival behaviour's answer ("" when the task has none)
    question: str = ""  # the bare question when `prompt` is a rendered conversation (svf_chat_tasks)


@dataclasses.dataclass(frozen=True)
class Task:
    """name; draw(rng) -> (prompt, answer, distractor); reward(completion, answer) -> float."""

    name: str
    draw: Callable[[np.random.Generator], tuple[str, str, str]]
    reward: Reward = exact_match

    def examples(self, n: int, seed: int) -> list[Example]:
        rng = np.random.default_rng([seed, sum(map(ord, self.name))])
        return [Example(p, a, self.name, d) for p, a, d in (self.draw(rng) for _ in range(n))]


def _letters(rng, lo, hi) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(lo, hi + 1))))


def _arith(rng):
    """A 3-digit number plus a digit, carrying into the tens (whose digit is below 9, so the carry stops
    there); the rival behaviour forgets the carry."""
    b = int(rng.integers(1, 10))
    a = 100 * int(rng.integers(1, 10)) + 10 * int(rng.integers(1, 9)) + int(rng.integers(10 - b, 10))
    return f"{a}+{b}=", str(a + b), str(a + b - 10)


def _reverse(rng):
    w = _letters(rng, 3, 5)
    return f"rev {w}=", w[::-1], w


def _sort(rng):
    d = [int(x) for x in rng.integers(0, 10, int(rng.integers(3, 6)))]
    return f"sort {''.join(map(str, d))}=", "".join(map(str, sorted(d))), "".join(map(str, sorted(d, reverse=True)))


def _upper(rng):
    w = _letters(rng, 3, 5)
    return f"up {w}=", w.upper(), ""


TASKS = {t.name: t for t in (Task("arith", _arith), Task("reverse", _reverse), Task("sort", _sort),
                             Task("upper", _upper))}
DOMAINS = ("arith", "reverse", "sort")  # the expert domains of the demo
HELD_OUT = ("upper",)  # in the corpus, answered correctly, labelled "others", no expert


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown SVF task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]


def is_test_prompt(prompt: str) -> bool:
    """A fixed quarter of every task's prompts (by a stable hash) is kept for testing: `split` draws test
    examples only from it and train / validation examples never from it, whatever the seeds."""
    return zlib.crc32(prompt.encode()) % 4 == 0


def split(task: Task, *, n_train: int, n_valid: int, n_test: int, seed: int = 0):
    """Disjoint train / valid / test lists (by prompt) drawn from one seeded stream; test prompts are
    `is_test_prompt` ones, train and valid prompts never are."""
    pool, test, seen = [], [], set()
    for ex in task.examples(16 * (n_train + n_valid + n_test) + 64, seed):
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            (test if is_test_prompt(ex.prompt) else pool).append(ex)
    if len(pool) < n_train + n_valid or len(test) < n_test:
        raise ValueError(f"task {task.name!r} has only {len(pool)} distinct train/valid prompts and {len(test)} "
                         f"test prompts here, {n_train + n_valid} and {n_test} were asked for")
    return pool[:n_train], pool[n_train:n_train + n_valid], test[:n_test]


def corpus_lines(n_per_task: int, seed: int, *, domains=DOMAINS, held_out=HELD_OUT, distractor_share: float = 0.45,
                 label_share: float = 0.2) -> list[tuple[str, str]]:
    """(kind, line) pairs in corpus order; kind is "answer", "distractor" or "label".

    Each task contributes n_per_task "prompt answer" lines; on an expert domain each line is answered by the
    distractor with probability distractor_share (when it differs from the answer). A share label_share of
    the prompts also gets a "? prompt \\boxed{name}" line ("others" for held-out tasks). Examples are
    drawn with seed 10**6 + seed, apart from the demo's small seeds; arith has only ~3,200 prompts, though,
    so most of its test prompts also occur in the corpus (with both answers): the base has seen them.
    """
    if not 0.0 <= distractor_share <= 1.0 or math.isnan(distractor_share):
        raise ValueError(f"distractor_share must lie in [0, 1], got {distractor_share}")
    rng = np.random.default_rng([seed, 7])
    lines = []
    for name in (*domains, *held_out):
        label = name if name in domains else OTHERS_LABEL
        for ex in get_task(name).examples(n_per_task, 10**6 + seed):
            wrong = name in domains and ex.distractor not in ("", ex.answer) and rng.random() < distractor_share
            lines.append(("distractor" if wrong else "answer", ex.prompt + (ex.distractor if wrong else ex.answer)))
            if rng.random() < label_share:
                lines.append(("label", DEMO_CLASSIFY_TEMPLATE.format(query=ex.prompt) + "\\boxed{" + label + "}"))
    return [lines[i] for i in rng.permutation(len(lines))]


def corpus(n_per_task: int, seed: int, **kwargs) -> str:
    """The pretraining text: corpus_lines joined by newlines."""
    return "".join(line + STOP for _, line in corpus_lines(n_per_task, seed, **kwargs))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.svf_tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="write pretraining text for the demo decoder")
    c.add_argument("--out", required=True)
    c.add_argument("--per-task", type=int, default=20000, help="answer lines per task")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--distractor-share", type=float, default=0.45,
                   help="share of an expert domain's lines answered by the rival behaviour")
    args = p.parse_args(argv)
    if not 0.0 <= args.distractor_share <= 1.0 or math.isnan(args.distractor_share):
        p.error(f"--distractor-share must lie in [0, 1], got {args.distractor_share}")
    text = corpus(args.per_task, args.seed, distractor_share=args.distractor_share)
    atomic_write_text(Path(args.out), text)
    print(f"wrote {len(text)} characters ({text.count(STOP)} lines) to {args.out}")


if __name__ == "__main__":
    main()
