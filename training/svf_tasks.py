"""Self-contained tasks with verifiable answers for SVF experts: `python -m training.svf_tasks corpus ...`.

Each task draws examples from a seed: a prompt such as "37+45=" and its answer "82". A model answers with
the text up to the first newline; the default reward is +1 for an exact match and -1 otherwise (the
official Transformer² rewards). `corpus` writes pretraining text (answers and domain labels) for the demo
decoder that `training.hyformer` trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxmodels.io import atomic_write_text

STOP = "\n"
# The demo's classification prompt: short enough for a byte-level decoder; the answer is \boxed{domain}.
DEMO_CLASSIFY_TEMPLATE = "{query}?domain "

Reward = Callable[[str, str], float]


def exact_match(completion: str, answer: str) -> float:
    """+1 if the completion (up to the first newline, stripped) equals the answer, else -1."""
    return 1.0 if completion.split(STOP, 1)[0].strip() == answer.strip() else -1.0


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    domain: str


@dataclasses.dataclass(frozen=True)
class Task:
    """name; draw(rng) -> (prompt, answer); reward(completion, answer) -> float."""

    name: str
    draw: Callable[[np.random.Generator], tuple[str, str]]
    reward: Reward = exact_match

    def examples(self, n: int, seed: int) -> list[Example]:
        rng = np.random.default_rng([seed, sum(map(ord, self.name))])
        return [Example(*self.draw(rng), self.name) for _ in range(n)]


def _letters(rng, lo, hi) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(lo, hi + 1))))


def _arith(rng):
    a, b = (int(x) for x in rng.integers(10, 100, 2))
    return f"{a}+{b}=", str(a + b)


def _reverse(rng):
    w = _letters(rng, 3, 5)
    return f"rev {w}=", w[::-1]


def _sort(rng):
    d = [int(x) for x in rng.integers(0, 10, int(rng.integers(3, 6)))]
    return f"sort {''.join(map(str, d))}=", "".join(map(str, sorted(d)))


def _upper(rng):
    w = _letters(rng, 3, 5)
    return f"up {w}=", w.upper()


TASKS = {t.name: t for t in (Task("arith", _arith), Task("reverse", _reverse), Task("sort", _sort),
                             Task("upper", _upper))}
DOMAINS = ("arith", "reverse", "sort")  # the expert domains of the demo; "upper" is held out


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown SVF task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]


def split(task: Task, *, n_train: int, n_valid: int, n_test: int, seed: int = 0):
    """Disjoint train / valid / test lists (by prompt) drawn from one seeded stream."""
    pool, seen = [], set()
    stream = task.examples(4 * (n_train + n_valid + n_test) + 64, seed)
    for ex in stream:
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            pool.append(ex)
    need = n_train + n_valid + n_test
    if len(pool) < need:
        raise ValueError(f"task {task.name!r} has only {len(pool)} distinct prompts, {need} were asked for")
    return pool[:n_train], pool[n_train:n_train + n_valid], pool[n_train + n_valid:need]


def corpus(n_per_domain: int, seed: int, *, domains=DOMAINS, answer_fraction: float = 1.0) -> str:
    """Pretraining text: "prompt answer" lines for every domain and "prompt?domain \\boxed{name}" lines.

    Seeds 10**6 + seed so that the demo's evaluation examples (drawn with small seeds) overlap it only
    by chance. answer_fraction < 1 leaves answers out of some lines (a weaker base model).
    """
    rng = np.random.default_rng([seed, 7])
    lines = []
    for name in domains:
        for ex in get_task(name).examples(n_per_domain, 10**6 + seed):
            lines.append(ex.prompt + (ex.answer if rng.random() < answer_fraction else ""))
            if rng.random() < 0.3:
                lines.append(DEMO_CLASSIFY_TEMPLATE.format(query=ex.prompt) + "\\boxed{" + name + "}")
    order = rng.permutation(len(lines))
    return "".join(lines[i] + STOP for i in order)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.svf_tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="write pretraining text for the demo decoder")
    c.add_argument("--out", required=True)
    c.add_argument("--per-domain", type=int, default=20000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--answer-fraction", type=float, default=1.0)
    args = p.parse_args(argv)
    if not 0.0 <= args.answer_fraction <= 1.0 or math.isnan(args.answer_fraction):
        p.error(f"--answer-fraction must lie in [0, 1], got {args.answer_fraction}")
    text = corpus(args.per_domain, args.seed, answer_fraction=args.answer_fraction)
    atomic_write_text(Path(args.out), text)
    print(f"wrote {len(text)} characters ({text.count(STOP)} lines) to {args.out}")


if __name__ == "__main__":
    main()
