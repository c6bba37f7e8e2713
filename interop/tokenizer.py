"""A Hugging Face tokenizer directory behind the interface of `jaxmodels.tokenizer.ByteTokenizer`.

`HFTokenizer` reads a local directory through `transformers.PreTrainedTokenizerFast` (tokenizer.json, plus
tokenizer_config.json / special_tokens_map.json when present), so its special tokens are the ones those files
declare. transformers is imported only when one is built (importing this module does not need it), and
`PreTrainedTokenizerFast` never imports torch. It lives in interop because `jaxmodels` never imports transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxmodels.tokenizer import TOKENIZER_FILE, ByteTokenizer


class HFTokenizer:
    """A Hugging Face tokenizer from a local directory holding tokenizer.json (never downloads).

    `eos_id`, `bos_id`, `pad_id` and `mask_id` are the special tokens the directory's files declare, None for
    those it does not (a bare tokenizer.json declares none). `vocab_size` counts the added tokens. `hf` is the
    underlying `PreTrainedTokenizerFast`.
    """

    def __init__(self, directory: str | os.PathLike):
        from transformers import PreTrainedTokenizerFast

        if not (Path(directory) / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE} in that directory (a Hugging Face tokenizer "
                                    f"directory: {TOKENIZER_FILE}, optionally tokenizer_config.json and "
                                    f"special_tokens_map.json)")
        try:
            self.hf = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - tokenizers' own parse errors are bare Exceptions
            raise ValueError(f"{directory}: cannot load the tokenizer there ({type(err).__name__}: {err})") from err
        self.name = str(directory)
        self.vocab_size = len(self.hf)
        self.eos_id = self.hf.eos_token_id
        self.bos_id = self.hf.bos_token_id
        self.pad_id = self.hf.pad_token_id
        self.mask_id = self.hf.mask_token_id

    @property
    def chat_template(self) -> str | None:
        return self.hf.chat_template

    def encode(self, text: str) -> np.ndarray:
        """text -> ids of shape [T] int32 (no special tokens added)."""
        return np.asarray(self.hf.encode(text, add_special_tokens=False), np.int32)

    def decode(self, ids) -> str:
        """ids of any shape -> text; the special tokens are skipped."""
        return self.hf.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=True)

    def apply_chat_template(self, messages, **kwargs):
        """The tokenizer's own chat template (`PreTrainedTokenizerFast.apply_chat_template`) over `messages`."""
        if self.hf.chat_template is None:
            raise ValueError(f"tokenizer {self.name} has no chat template")
        return self.hf.apply_chat_template(messages, **kwargs)


def load_tokenizer(directory: str | os.PathLike | None) -> ByteTokenizer | HFTokenizer:
    """None -> the byte-level tokenizer; a directory -> its Hugging Face tokenizer."""
    return ByteTokenizer() if directory is None else HFTokenizer(directory)
