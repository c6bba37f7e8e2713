"""Prompt-based routing: the model names the query's domain in \\boxed{...}; anything else is "others".

The prototype decoded the prompt together with the answer and the prompt contains "math", so it always
answered "math"; here only the continuation is parsed (a leading copy of the prompt is removed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

OTHERS = "others"
CLASSIFICATION_PROMPT = ("Classify the question into one of: {labels}. Answer as \\boxed{{category}}.\n"
                         "Question: {query}\nCategory: ")
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def parse_boxed(text: str, labels: Sequence[str]) -> str:
    """The first \\boxed{X} in text if X (trimmed, lowercase) is one of labels; otherwise "others"."""
    m = _BOXED.search(text)
    if m is None:
        return OTHERS
    answer = m.group(1).strip().lower()
    known = {label.lower(): label for label in labels}
    return known.get(answer, OTHERS)


def classify_prompt(generate_fn: Callable[[str], str], query: str, labels: Sequence[str], *,
                    template: str = CLASSIFICATION_PROMPT) -> str:
    """Asks the model (generate_fn: prompt -> text) for the query's class among labels; "others" if unclear."""
    prompt = template.format(labels=", ".join(labels), query=query)
    text = generate_fn(prompt)
    if text.startswith(prompt):
        text = text[len(prompt):]
    return parse_boxed(text, labels)


def select_expert(label: str, experts: Mapping[str, object]):
    """The expert routed to `label`; None (the base weights) for "others" or a label mapped to None."""
    if label == OTHERS:
        return experts.get(OTHERS)
    if label not in experts:
        raise ValueError(f"the classifier answered {label!r}, which names no expert; known experts: "
                         f"{sorted(experts)} (answer {OTHERS!r} routes to the base weights)")
    return experts[label]
