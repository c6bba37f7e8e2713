"""Data for `training.lm`: chat JSONL rendered with the tokenizer's chat template (loss on assistant tokens
only), or plain text cut into windows; both as fixed-length rows, and the rows of each step.

A row is `input_ids`, `labels` (the token itself where it counts, IGNORE elsewhere; the model's loss shifts
them) and `attention_mask` (0 on padding), each [T] int32. Which rows a step uses is a pure function of
(seed, step) (`RowSchedule`), and a process reads only the rows its devices hold (`jaxmodels_training.lm_step`).

Assistant tokens: with a template that marks them (`{% generation %}` ... `{% endgeneration %}`), transformers'
`return_assistant_tokens_mask`; otherwise each assistant message i is located by rendering the conversation up
to message i with the generation prompt and through message i: the characters between the two renderings are
the reply (with its end-of-turn tokens), and a token counts when it holds any of those characters (offsets into
the full rendering, so a token merged across the boundary is still found, and nothing shifts). A template that does not render a
conversation as a sequence of such prefixes is refused, naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

IGNORE = -100
_GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


class DataError(ValueError):
    """Training data that cannot be used (reported as one line naming the file and line)."""


def read_chat_jsonl(path: str | Path) -> list[tuple[int, list[dict]]]:
    """[(line number, messages)] of a JSONL file of {"messages": [{"role": str, "content": str}, ...]} objects;
    blank lines are skipped, everything else is checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--chat {path}: no such file")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict) or "messages" not in obj:
                raise DataError(f"{where}: expected an object with a \"messages\" list, got "
                                f"{'keys ' + str(sorted(obj)) if isinstance(obj, dict) else type(obj).__name__}")
            messages = obj["messages"]
            if not isinstance(messages, list) or not messages:
                raise DataError(f"{where}: \"messages\" must be a non-empty list")
            for i, m in enumerate(messages):
                if not isinstance(m, dict):
                    raise DataError(f"{where}: message {i} is a {type(m).__name__}, not an object")
                if not isinstance(m.get("role"), str):
                    raise DataError(f"{where}: message {i} has no \"role\" string")
                if not isinstance(m.get("content"), str):
                    found = type(m["content"]).__name__ if "content" in m else "none"
                    raise DataError(f"{where}: message {i} (role {m['role']!r}): \"content\" must be a string, "
                                    f"got {found}")
            if not any(m["role"] == "assistant" for m in messages):
                raise DataError(f"{where}: no assistant message, so nothing to learn from this conversation")
            out.append((n, messages))
    if not out:
        raise DataError(f"--chat {path}: the file holds no conversation")
    return out


class ChatRenderer:
    """Renders conversations with a Hugging Face tokenizer's chat template: encode(messages) -> (ids [L] int32,
    assistant mask [L] bool). `hf` is a transformers tokenizer."""

    def __init__(self, hf, name: str):
        if not hf.chat_template:
            raise DataError(f"--chat: tokenizer {name} has no chat template (tokenizer_config.json "
                            f"chat_template or chat_template.jinja); pass --chat-template FILE")
        self.hf, self.name = hf, name
        self.marked = bool(_GENERATION_MARKER.search(hf.chat_template))

    def _render(self, messages, **kw) -> str:
        return self.hf.apply_chat_template(messages, tokenize=False, **kw)

    def encode(self, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        if self.marked:
            out = self.hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True)
            return np.asarray(out["input_ids"], np.int32), np.asarray(out["assistant_masks"], bool)
        text = self._render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._render(messages[:i], add_generation_prompt=True)
            through = self._render(messages[: i + 1])
            if not (text.startswith(through) and through.startswith(before)):
                raise DataError(f"the chat template of {self.name} does not render this conversation prefix by "
                                f"prefix (message {i}), so its assistant tokens cannot be located; use a template "
                                f"with {{% generation %}} markers")
            spans.append((len(before), len(through)))
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)  # [L, 2] characters [start, end)
        mask = np.zeros(len(offsets), bool)
        for a, b in spans:
            mask |= (offsets[:, 1] > a) & (offsets[:, 0] < b)
        return np.asarray(enc["input_ids"], np.int32), mask


def render_chat(path: str | Path, renderer: ChatRenderer) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every conversation of a chat JSONL file as (ids [L], assistant mask [L]); errors name file and line."""
    import jinja2

    out = []
    for n, messages in read_chat_jsonl(path):
        try:
            out.append(renderer.encode(messages))
        except jinja2.TemplateError as e:
            raise DataError(f"{path}:{n}: the chat template refuses this conversation: {e}") from None
        except DataError as e:
            raise DataError(f"{path}:{n}: {e}") from None
    return out


@dataclasses.dataclass
class Rows:
    """Fixed-length rows: input_ids, labels, attention_mask, each [R, T] int32."""

    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Rows at `index` (any shape); -1 gives a padding row that counts for nothing."""
        index = np.asarray(index)
        safe = np.where(index < 0, 0, index)
        out = {"input_ids": self.input_ids[safe], "labels": self.labels[safe],
               "attention_mask": self.attention_mask[safe]}
        out["labels"] = np.where((index < 0)[..., None], IGNORE, out["labels"])
        return out

    def loss_tokens(self) -> int:
        return int(np.sum(self.labels[:, 1:] != IGNORE))


def chat_rows(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int, *, pack: bool,
              vocab_size: int, name: str) -> tuple[Rows, dict[str, int]]:
    """Conversations -> rows of seq_len tokens (one per row, right-padded; or `pack`ed several to a row, none
    split) and {"conversations", "truncated", "dropped"}: longer ones are cut at seq_len, and dropped when no
    assistant token is left to learn from (after the shift: the first token is never a target)."""
    kept, truncated, dropped = [], 0, 0
    for ids, mask in examples:
        if len(ids) > seq_len:
            ids, mask, truncated = ids[:seq_len], mask[:seq_len], truncated + 1
        if not mask[1:].any():
            dropped += 1
            continue
        kept.append((ids, mask))
    if not kept:
        raise DataError(f"the {name} conversations hold no assistant token within --seq-len {seq_len}")
    top = max(int(ids.max()) for ids, _ in kept)
    if top >= vocab_size:
        raise DataError(f"the tokenizer gives token id {top}, outside the model's vocabulary of {vocab_size}; "
                        f"pass the model's own tokenizer (--tokenizer)")
    groups: list[list[tuple[np.ndarray, np.ndarray]]] = []
    used = seq_len
    for example in kept:
        if pack and used + len(example[0]) <= seq_len:
            groups[-1].append(example)
            used += len(example[0])
        else:
            groups.append([example])
            used = len(example[0])
    r = len(groups)
    rows = Rows(np.full((r, seq_len), pad_id, np.int32), np.full((r, seq_len), IGNORE, np.int32),
                np.zeros((r, seq_len), np.int32))
    for i, group in enumerate(groups):
        ids = np.concatenate([g[0] for g in group])
        mask = np.concatenate([g[1] for g in group])
        rows.input_ids[i, : len(ids)] = ids
        rows.labels[i, : len(ids)] = np.where(mask, ids, IGNORE)
        rows.attention_mask[i, : len(ids)] = 1
    return rows, {"conversations": len(examples), "truncated": truncated, "dropped": dropped}


def split_examples(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): a seeded choice of round(fraction * n) examples (at least one when fraction > 0)
    held out, the order of both kept."""
    if fraction <= 0:
        return examples, []
    n = len(examples)
    k = max(1, round(fraction * n))
    if k >= n:
        raise DataError(f"--eval-fraction {fraction} of {n} conversations leaves none to train on")
    held = set(np.random.default_rng([seed, 1]).permutation(n)[:k].tolist())
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def encode_documents(docs: list[str], encode, eos_id: int | None) -> np.ndarray:
    """Documents -> one token stream [N] int32: `encode(text)` each (with the tokenizer's own special tokens,
    e.g. a BOS where the model wants one), and an EOS after it unless the encoding ends with one."""
    parts = []
    for doc in docs:
        ids = [int(i) for i in encode(doc)]
        if eos_id is not None and (not ids or ids[-1] != eos_id):
            ids.append(eos_id)
        parts.append(np.asarray(ids, np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def text_rows(tokens: np.ndarray, seq_len: int, *, vocab_size: int, name: str) -> Rows:
    """A token stream cut into consecutive windows of seq_len tokens, every token a target."""
    n = len(tokens) // seq_len
    if n == 0:
        raise DataError(f"the {name} text has {len(tokens)} tokens, less than one window of --seq-len {seq_len}")
    ids = tokens[: n * seq_len].reshape(n, seq_len)
    if int(ids.max()) >= vocab_size:
        raise DataError(f"the tokenizer gives token id {int(ids.max())}, outside the model's vocabulary of "
                        f"{vocab_size}; pass the model's own tokenizer (--tokenizer)")
    return Rows(ids, ids.copy(), np.ones_like(ids))


def split_documents(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, held out): every round(1 / fraction)-th document held out (none for fraction 0)."""
    if fraction <= 0:
        return docs, []
    every = max(2, round(1 / fraction))
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    if not held:
        raise DataError(f"--eval-fraction {fraction} holds out every {every}th document, and there are only "
                        f"{len(docs)}; pass --eval-data or more documents")
    return [d for i, d in enumerate(docs) if i % every != every - 1], held


class RowSchedule:
    """The rows of each step: epoch e visits every row once, in a permutation drawn from (seed, e);
    step(s) -> row indices [accum, batch]."""

    def __init__(self, n_rows: int, batch: int, accum: int, seed: int, *, name: str = "train"):
        self.per_step = batch * accum
        if n_rows < self.per_step:
            raise DataError(f"the {name} split has {n_rows} rows (conversations, or windows of --seq-len tokens), "
                            f"fewer than one step's --batch-size x --grad-accum = {self.per_step}; use more data "
                            f"or smaller sizes")
        self.n_rows, self.batch, self.accum, self.seed = n_rows, batch, accum, seed
        self.per_epoch = n_rows // self.per_step
        self._epoch, self._order = -1, None

    def step(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
        return self._order[i * self.per_step:(i + 1) * self.per_step].reshape(self.accum, self.batch)


def eval_batches(n_rows: int, batch: int, limit: int) -> list[np.ndarray]:
    """Evaluation row indices, in order, [1, batch] each (the last padded with -1), at most `limit` batches."""
    count = min(limit, -(-n_rows // batch))
    out = []
    for i in range(count):
        index = np.arange(i * batch, (i + 1) * batch)
        out.append(np.where(index < n_rows, index, -1)[None])
    return out
