"""Tokenizers for training: a byte-level one that needs no files, or a Hugging Face tokenizer.json."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus four special tokens: <pad> 256, <bos> 257, <eos> 258, <mask> 259."""

    vocab_size = 260
    pad_id, bos_id, eos_id, mask_id = 256, 257, 258, 259
    name = "bytes"

    def encode(self, text: str) -> np.ndarray:
        """text -> ids [T] int32."""
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).reshape(-1)
        return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers` tokenizer loaded from DIR/tokenizer.json (no download)."""

    def __init__(self, directory: str | os.PathLike):
        from tokenizers import Tokenizer

        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"--tokenizer {directory}: no tokenizer.json in that directory")
        self._tok = Tokenizer.from_file(str(path))
        self.name = str(directory)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        vocab = self._tok.get_vocab(with_added_tokens=True)

        def find(*names):
            return next((vocab[n] for n in names if n in vocab), None)

        self.eos_id = find("<|endoftext|>", "</s>", "<eos>", "[SEP]")
        self.bos_id = find("<s>", "<bos>", "[CLS]")
        self.pad_id = find("<pad>", "[PAD]", "<|endoftext|>")
        self.mask_id = find("<mask>", "[MASK]")

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=True)


def load_tokenizer(directory: str | os.PathLike | None):
    return ByteTokenizer() if directory is None else HFTokenizer(directory)
