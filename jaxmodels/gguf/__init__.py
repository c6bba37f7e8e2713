"""GGUF import: llama.cpp's single-file format -> a jaxmodels model, our checkpoint, or a transformers directory.

    jaxmodels.from_pretrained("model.gguf")                  # or a directory holding exactly one .gguf
    jaxmodels_interop.from_gguf.convert_from_gguf("model.gguf", "out", to="hf")  # also `jaxmodels-convert from-gguf`

Reading, dequantising and the tensor names are the `gguf` library's (`reader`); the architectures and what
llama.cpp changed in their tensors are a table (`archs`); `convert` presents the file as a Hugging Face checkpoint to
`jaxmodels.pretrained`. The tokenizer files go through transformers' GGUF tokenizer converter, so they
are built in interop (`jaxmodels_interop.gguf_tokenizer`). Importing this package imports `gguf`; `import jaxmodels` does not.
"""

from jaxmodels.gguf.archs import ARCHS, Arch, RopePairs
from jaxmodels.gguf.convert import GGUFSource, GGUFWeights, open_gguf
from jaxmodels.gguf.reader import GGUFError, GGUFFile

__all__ = ["ARCHS", "Arch", "GGUFError", "GGUFFile", "GGUFSource", "GGUFWeights", "RopePairs", "open_gguf"]
