"""Tiny chat data, tokenizers and models for the training.lm and LoRA tests (nothing downloaded).

A character-level BPE tokenizer trained here with `tokenizers`, ChatML-style templates with and without
`{% generation %}` markers, a learnable toy conversation task, and tiny random transformers models saved
with the tokenizer beside them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PLAIN = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MARKED = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
          "{{ m['content'] }}<|im_end|>\n{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>\n{% endif %}"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CAPITALS = {"france": "paris", "japan": "tokyo", "italy": "rome", "spain": "madrid", "peru": "lima",
            "egypt": "cairo", "kenya": "nairobi", "chile": "santiago", "cuba": "havana", "norway": "oslo"}
VOCAB = 97  # the tiny models' vocabulary: at least the tokenizer's length
# training.lm flags every test run shares: tiny batches, a log line per step, no evaluation unless asked
COMMON_ARGS = ["--batch-size", "4", "--seq-len", "48", "--warmup-steps", "2", "--log-every", "1", "--eval-every", "0"]


def conversations(n: int, seed: int = 0) -> list[dict]:
    """n toy conversations: the capital of a country, sometimes after a system prompt, some of two turns."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(sorted(CAPITALS), 2)
        messages = [{"role": "system", "content": "answer briefly"}] if rng.random() < 0.3 else []
        messages += [{"role": "user", "content": f"capital of {a}?"}, {"role": "assistant", "content": CAPITALS[a]}]
        if rng.random() < 0.4:
            messages += [{"role": "user", "content": f"and {b}?"}, {"role": "assistant", "content": CAPITALS[b]}]
        out.append({"messages": messages})
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tokenizer(template: str = PLAIN):
    """A PreTrainedTokenizerFast over the toy task's characters (and a few merges), with `template`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["\n".join(f"{m['role']}\n{m['content']}" for m in c["messages"]) for c in conversations(200, seed=1)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=80, special_tokens=SPECIALS, show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 chat_template=template)
    assert len(hf) <= VOCAB, len(hf)
    return hf


def tiny_model_dir(path: Path, kind: str = "llama", template: str = PLAIN, **config) -> Path:
    """A tiny random transformers `kind` model saved to `path` with the toy tokenizer beside it."""
    from tests.hf_models import tiny_hf_model

    tiny_hf_model(kind, path, **{"vocab_size": VOCAB, "num_key_value_heads": 2, "tie_word_embeddings": False,
                                 **config})
    tokenizer(template).save_pretrained(path)
    return path


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
