"""The byte-level tokenizer, which needs no files (Hugging Face tokenizers: `jaxmodels_interop.tokenizer`)."""

from __future__ import annotations

import numpy as np

TOKENIZER_FILE = "tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus four special tokens: <pad> 256, <bos> 257, <eos> 258, <mask> 259."""

    vocab_size = 260
    pad_id, bos_id, eos_id, mask_id = 256, 257, 258, 259
    name = "bytes"

    def encode(self, text: str) -> np.ndarray:
        """text -> ids of shape [T] int32 (no special tokens)."""
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """ids of any shape -> text; the special tokens are dropped."""
        ids = np.asarray(ids).reshape(-1)
        return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
