"""The SFT demonstration's task: short questions answered as one line of JSON, a format an instruct model
does not use unprompted. Generated from a seed (no download); a strict checker scores the format and the answer.

Questions (four kinds) and the reply taught:

    What is 17 plus 25?                         {"answer": "42", "kind": "arithmetic"}
    What is the capital of Japan?               {"answer": "Tokyo", "kind": "capital"}
    How many letters are in the word "planet"?  {"answer": "6", "kind": "letters"}
    What is the opposite of "early"?            {"answer": "late", "kind": "opposite"}

Train and held-out sets are disjoint in their questions (the held-out ones are never seen in training).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens", "Portugal": "Lisbon",
    "Austria": "Vienna", "Ireland": "Dublin", "Russia": "Moscow", "China": "Beijing", "India": "New Delhi",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Argentina": "Buenos Aires", "Chile": "Santiago",
    "Mexico": "Mexico City", "Cuba": "Havana", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "Hungary": "Budapest", "Denmark": "Copenhagen", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Australia": "Canberra", "Brazil": "Brasilia", "Colombia": "Bogota",
    "South Korea": "Seoul", "Indonesia": "Jakarta", "Philippines": "Manila",
}
OPPOSITES = {
    "early": "late", "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "up": "down",
    "light": "dark", "open": "closed", "full": "empty", "strong": "weak", "rich": "poor", "old": "new",
    "hard": "soft", "high": "low", "long": "short", "wet": "dry", "loud": "quiet", "clean": "dirty",
    "true": "false", "win": "lose", "push": "pull", "buy": "sell", "first": "last", "inside": "outside",
}
WORDS = ("planet", "river", "window", "garden", "music", "pencil", "orange", "silver", "bridge", "castle",
         "forest", "rabbit", "candle", "winter", "summer", "doctor", "island", "jacket", "ladder", "mirror",
         "needle", "pocket", "rocket", "saddle", "tunnel", "violin", "wallet", "yellow", "anchor", "basket",
         "cat", "dog", "sun", "tree", "house", "ocean", "mountain", "library", "elephant", "umbrella")
OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
KINDS = ("arithmetic", "capital", "letters", "opposite")


PHRASINGS = {
    "capital": ("What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?"),
    "letters": ('How many letters are in the word "{}"?', 'Count the letters in "{}".',
                'How many characters does the word "{}" have?'),
    "opposite": ('What is the opposite of "{}"?', 'Give the antonym of "{}".',
                 'What word means the opposite of "{}"?'),
}


def _pool(kind: str) -> list[tuple[str, str]]:
    """Every (question, answer) of a finite kind."""
    answers = {"capital": CAPITALS, "letters": {w: str(len(w)) for w in WORDS}, "opposite": OPPOSITES}[kind]
    return [(phrase.format(x), answers[x]) for x in sorted(answers) for phrase in PHRASINGS[kind]]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    op = rng.choice(sorted(OPS))
    a, b = rng.randint(2, 60), rng.randint(2, 12 if op == "times" else 60)
    return f"What is {a} {op} {b}?", str(OPS[op](a, b))


def reply(answer: str, kind: str) -> str:
    return json.dumps({"answer": answer, "kind": kind})


def make_sets(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) examples {"question", "answer", "kind"}, the kinds in equal shares (n_train and
    n_eval multiples of 4); no question appears in both."""
    if n_train % len(KINDS) or n_eval % len(KINDS):
        raise ValueError(f"set sizes must be multiples of {len(KINDS)}, got {n_train} and {n_eval}")
    rng = random.Random(seed)
    need = (n_train + n_eval) // len(KINDS)
    train, held_out = [], []
    for kind in KINDS:
        if kind == "arithmetic":
            found: dict[str, str] = {}
            while len(found) < need:
                question, answer = _arithmetic(rng)
                found.setdefault(question, answer)
            pairs = list(found.items())
        else:
            pool = _pool(kind)
            if len(pool) < need:
                raise ValueError(f"{kind}: {len(pool)} distinct questions, {need} asked for")
            pairs = rng.sample(pool, need)
        items = [{"question": q, "answer": a, "kind": kind} for q, a in pairs]
        train += items[: n_train // len(KINDS)]
        held_out += items[n_train // len(KINDS):]
    rng.shuffle(train)
    rng.shuffle(held_out)
    return train, held_out


def write_chat_jsonl(items: list[dict], path: Path) -> Path:
    """The training format of `python -m training.lm --chat`: {"messages": [user, assistant]} per line."""
    with open(path, "w") as f:
        for it in items:
            messages = [{"role": "user", "content": it["question"]},
                        {"role": "assistant", "content": reply(it["answer"], it["kind"])}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def score(text: str, item: dict) -> dict[str, bool]:
    """{"format": the reply is exactly one JSON object with keys answer and kind (the right kind),
    "correct": and its answer is the right one (case and surrounding spaces ignored)}."""
    try:
        obj = json.loads(text.strip())
    except ValueError:
        return {"format": False, "correct": False}
    ok = isinstance(obj, dict) and set(obj) == {"answer", "kind"} and obj.get("kind") == item["kind"]
    correct = ok and str(obj["answer"]).strip().lower() == item["answer"].lower()
    return {"format": ok, "correct": correct}
