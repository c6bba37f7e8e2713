"""The training scripts' tokenizers, which live below training: bytes in `jaxmodels.tokenizer`, Hugging Face
directories in `jaxmodels_interop.tokenizer`."""

from jaxmodels.tokenizer import ByteTokenizer
from jaxmodels_interop.tokenizer import HFTokenizer, load_tokenizer

__all__ = ["ByteTokenizer", "HFTokenizer", "load_tokenizer"]
