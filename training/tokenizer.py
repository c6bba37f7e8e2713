"""The training scripts' tokenizers, which live in `jaxmodels.tokenizer` (below both training and interop)."""

from jaxmodels.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

__all__ = ["ByteTokenizer", "HFTokenizer", "load_tokenizer"]
