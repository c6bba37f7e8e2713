"""Real English text on every machine, offline: the prose of the Python documentation topics that ship in the
standard library (`pydoc_data/topics.py`, the text `help("assignment")` prints: the language reference and the
built-in types' chapters), with the code, grammar and table blocks dropped.

A block (text between blank lines) is kept when it reads as prose: at least 6 words, 70% of them alphabetic,
under 6% of its non-space characters code symbols, no `>>>` prompt, no `::=` grammar; heading underlines go.
Every `held_every`-th topic (sorted by name) is held out and written after the training topics, so the first
tokens of the file are training text and the rest is text from topics the student never saw.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from jaxmodels.io import atomic_write_text

SYMBOLS = frozenset("=()[]{}<>_#\\|@$%^&~`+/")
SOURCE = "pydoc_data/topics.py (Python {v}): the prose of the documentation topics, code and grammar blocks dropped"


def is_prose(block: str) -> bool:
    s = block.strip()
    if not s or re.fullmatch(r"[*=\-^~\s]+", s) or ">>>" in s or "::=" in s:
        return False
    chars = [c for c in s if not c.isspace()]
    words = s.split()
    alpha = sum(w.strip(".,;:!?\"“”‘’()*").isalpha() for w in words) / len(words)
    return len(words) >= 6 and alpha > 0.7 and sum(c in SYMBOLS for c in chars) / len(chars) < 0.06


def topics() -> dict[str, str]:
    """{topic: its prose paragraphs (each on one line), joined by blank lines}, topics sorted by name."""
    from pydoc_data.topics import topics as raw

    out = {}
    for name in sorted(raw):
        kept = [" ".join(b.split()) for b in re.split(r"\n\s*\n", raw[name]) if is_prose(b)]
        if kept:
            out[name] = "\n\n".join(kept)
    return out


def write_corpus(path: Path, held_every: int = 5) -> tuple[str, str, str]:
    """Writes the corpus file (training topics, then held-out ones); returns (train text, held-out text, source)."""
    docs = list(topics().values())
    train = "\n\n".join(d for i, d in enumerate(docs) if i % held_every != held_every - 1)
    held = "\n\n".join(d for i, d in enumerate(docs) if i % held_every == held_every - 1)
    text = train + "\n\n" + held
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return train, held, SOURCE.format(v=".".join(map(str, sys.version_info[:3])))
