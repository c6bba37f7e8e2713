"""The tokenizer a GGUF file describes, as Hugging Face tokenizer files.

llama.cpp stores the vocabulary, merges, token types and special token ids as `tokenizer.ggml.*` metadata.
transformers' GGUF tokenizer converter (`transformers.integrations.gguf.gguf_tokenizer_mapping`, which needs
no torch) turns them into a `tokenizers.Tokenizer`; we read the metadata with the `gguf` library under the
converter's own key map, and write tokenizer.json, tokenizer_config.json (special tokens, chat template,
add_bos/add_eos) and generation_config.json (bos / eos / pad ids), the files `HFTokenizer` and
`transformers.AutoTokenizer` read.
"""

from __future__ import annotations

import json
from typing import Any

import gguf

from jaxmodels.gguf.reader import GGUFError, GGUFFile

TOK = gguf.Keys.Tokenizer
# tokenizer_config.json name -> metadata key of the token's id (transformers' _SPECIAL_TOKENS, same keys)
_SPECIAL = {"bos_token": TOK.BOS_ID, "eos_token": TOK.EOS_ID, "unk_token": TOK.UNK_ID, "pad_token": TOK.PAD_ID}


def has_tokenizer(file: GGUFFile) -> bool:
    return TOK.MODEL in file and TOK.LIST in file


def _converter():
    from transformers.integrations.gguf import gguf_tokenizer_mapping

    return gguf_tokenizer_mapping


def _group(file: GGUFFile, group: str) -> dict[str, Any]:
    """{converter name: value} for one group of transformers' GGUF_TOKENIZER_MAPPING ("tokenizer" keys are
    relative to `tokenizer.`)."""
    renames = _converter().GGUF_TOKENIZER_MAPPING[group]
    return {name: file.value(f"tokenizer.{key}") for key, name in renames.items() if f"tokenizer.{key}" in file}


def build(file: GGUFFile) -> tuple[Any, dict[str, Any]]:
    """-> (tokenizers.Tokenizer, tokenizer_config dict)."""
    tokens = _group(file, "tokenizer")
    config = _group(file, "tokenizer_config")
    kind = tokens.get("tokenizer_type")
    if kind == "llama":  # sentencepiece vocabularies get a BOS unless the file says otherwise (llama.cpp's rule)
        config.setdefault("add_bos_token", True)
    try:
        backend, _ = _converter().convert_gguf_tokenizer(file.architecture, tokens)
    except (ValueError, KeyError, TypeError) as e:
        raise GGUFError(f"{file.path}: cannot build its tokenizer ({TOK.MODEL}={kind!r}): {e}") from None
    vocab = tokens["tokens"]
    for name, key in _SPECIAL.items():
        token_id = file.value(key)
        if token_id is not None:
            if not 0 <= token_id < len(vocab):
                raise GGUFError(f"{file.path}: {key}={token_id} is outside the vocabulary of {len(vocab)} tokens")
            config[name] = vocab[token_id]
    return backend, config


def files(file: GGUFFile) -> dict[str, str]:
    """{file name: contents} of tokenizer.json, tokenizer_config.json and generation_config.json (empty when the
    GGUF file holds no tokenizer)."""
    if not has_tokenizer(file):
        return {}
    backend, config = build(file)
    generation = {k: file.value(key) for k, key in
                  (("bos_token_id", TOK.BOS_ID), ("eos_token_id", TOK.EOS_ID), ("pad_token_id", TOK.PAD_ID))}
    return {"tokenizer.json": backend.to_str(),
            "tokenizer_config.json": _json({"tokenizer_class": "PreTrainedTokenizerFast", **config}),
            "generation_config.json": _json({k: v for k, v in generation.items() if v is not None})}


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
