"""Scoring a chat model on the SFT demonstration's held-out questions (benchmarks/suites/_sft_task.py):
greedy replies through our `generate` (or transformers' for an exported model) and the held-out loss on the
reply tokens."""

from __future__ import annotations

import numpy as np

from jaxmodels_benchmarks.suites._sft_task import reply, score


def prompts(tokenizer, items: list[dict]) -> list[list[int]]:
    """Each question as the chat template's prompt (generation prompt added), as token ids."""
    return [list(tokenizer.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=True,
                                               add_generation_prompt=True)) for it in items]


def _ids(rendered) -> list[int]:
    """apply_chat_template's tokens as a list (transformers 5 returns a BatchEncoding for tokenize=True)."""
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def left_padded(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    return ids, mask


def replies_ours(model, tokenizer, items: list[dict], *, eos: int, batch: int = 16, new_tokens: int = 32) -> list[str]:
    import jaxmodels

    rows = [_ids(tokenizer.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=True,
                                               add_generation_prompt=True)) for it in items]
    texts = []
    for start in range(0, len(rows), batch):
        ids, mask = left_padded(rows[start:start + batch], eos)
        out = np.asarray(jaxmodels.generate(model, ids, new_tokens, attention_mask=mask, eos_token_id=eos))
        for row in out[:, ids.shape[1]:]:
            row = row.tolist()
            texts.append(tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True))
    return texts


def replies_transformers(model, tokenizer, items: list[dict], *, eos: int, batch: int = 16,
                         new_tokens: int = 32) -> list[str]:
    import torch

    rows = [_ids(tokenizer.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=True,
                                               add_generation_prompt=True)) for it in items]
    texts = []
    for start in range(0, len(rows), batch):
        ids, mask = left_padded(rows[start:start + batch], eos)
        with torch.no_grad():
            out = model.generate(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                                 max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        for row in out[:, ids.shape[1]:].numpy():
            row = row.tolist()
            texts.append(tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True))
    return texts


def reply_loss(model, tokenizer, items: list[dict], *, batch: int = 16) -> float:
    """Mean cross-entropy (nats per token) of the taught replies (and the end-of-turn token) given each prompt:
    conversations right-padded to one length (causal: the padding after a row changes none of its logits),
    one jitted forward per batch."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxmodels.generate import forward_logits

    rows, starts = [], []
    for it in items:
        prompt = _ids(tokenizer.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=True,
                                                    add_generation_prompt=True))
        full = _ids(tokenizer.apply_chat_template(
            [{"role": "user", "content": it["question"]},
             {"role": "assistant", "content": reply(it["answer"], it["kind"])}], tokenize=True))
        if full[: len(prompt)] != prompt:
            raise ValueError("the chat template's prompt is not a prefix of the conversation")
        rows.append(full)
        starts.append(len(prompt))
    width = -(-max(map(len, rows)) // 32) * 32
    graphdef, state = nnx.split(model)
    total, count = 0.0, 0
    for b in range(0, len(rows), batch):
        chunk = rows[b:b + batch] + [rows[0]] * (batch - len(rows[b:b + batch]))  # a full batch: one compile
        ids = np.zeros((batch, width), np.int32)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = r
        logp = np.asarray(jax.nn.log_softmax(forward_logits(graphdef, state, jnp.asarray(ids)).astype(jnp.float32)))
        for i in range(min(batch, len(rows) - b)):
            r, start = rows[b + i], starts[b + i]
            picked = logp[i, np.arange(start - 1, len(r) - 1), np.asarray(r[start:])]
            total += float(-picked.sum())
            count += len(picked)
    return total / count


def summary(texts: list[str], items: list[dict]) -> dict:
    scores = [score(t, it) for t, it in zip(texts, items)]
    n = len(scores)
    fmt, correct = sum(s["format"] for s in scores), sum(s["correct"] for s in scores)
    return {"format": fmt / n, "correct": correct / n, "n": n,
            "format_se": float(np.sqrt(fmt / n * (1 - fmt / n) / n)),
            "correct_se": float(np.sqrt(correct / n * (1 - correct / n) / n))}
