"""A GGUF file opened through the `gguf` library, with every way it can be unreadable turned into one error.

`GGUFFile(path)` checks the magic bytes, lets `gguf.GGUFReader` parse the header (memory-mapped: no tensor data
is read), checks that every tensor's bytes lie inside the file, and then gives the metadata as plain Python
values (`value(key)`) and each tensor dequantised to float32 (`dequantize(name)`) by `gguf.quants.dequantize`,
or as Q8_0's int8 values and float16 block scales (`q8_0(name)`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np

GGUF_MAGIC = b"GGUF"
_Q8_0_SOURCES = (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                 gguf.GGMLQuantizationType.BF16)


class GGUFError(ValueError):
    """A GGUF file that cannot be read, or holds something jaxmodels cannot represent."""


def dequantizable(qtype: gguf.GGMLQuantizationType) -> bool:
    """Whether `gguf.quants.dequantize` implements this type: F32 and F16 directly, every other type through the
    quantisation class the library registers for it (`gguf.quants._type_traits`, what `dequantize` looks up)."""
    return qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) or qtype in gguf.quants._type_traits


class _Reader(gguf.GGUFReader):
    """GGUFReader that names the tensor whose type id the library does not know (it would raise a bare enum
    ValueError while building its tensor list)."""

    def _build_tensors(self, start_offs, fields):
        known = {int(t) for t in gguf.GGMLQuantizationType}
        for field in fields:
            raw_type = int(field.parts[4][0])  # name length, name, n_dims, dims, type, offset
            if raw_type not in known:
                name = bytes(field.parts[1]).decode("utf-8", errors="replace")
                raise GGUFError(f"tensor {name!r} has ggml type {raw_type}, which the gguf library "
                                f"({gguf_version()}) does not know, so it cannot be dequantised")
        super()._build_tensors(start_offs, fields)

    def _get(self, offset: int, dtype, count: int = 1, override_order=None) -> np.ndarray:
        """GGUFReader._get over a plain ndarray view of the memory map. Every slice of an np.memmap runs its
        Python-level __array_finalize__, and the library slices several times per string, so a 49k-token
        vocabulary took 2.7 s to parse instead of 0.7 s (SmolLM2-135M). Same bytes, same byte order."""
        plain = self.__dict__.get("_plain")
        if plain is None:
            plain = self._plain = self.data.view(np.ndarray)
        dtype = np.dtype(dtype)
        count = int(count)
        arr = plain[offset:offset + dtype.itemsize * count].view(dtype)[:count]
        return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))


def gguf_version() -> str:
    from importlib.metadata import version

    return f"gguf {version('gguf')}"


class GGUFFile:
    """The metadata and tensors of one .gguf file.

    `architecture`: general.architecture; `tensors`: {name: gguf.ReaderTensor} in file order;
    `value(key, default)`: a metadata value as int / float / bool / str / list.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
        try:
            self._reader = _Reader(self.path)
        except GGUFError as e:
            raise GGUFError(f"{self.path}: {e}") from None
        except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as e:
            # A header cut short makes the library index past the end of its memory map.
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF file (the gguf library cannot parse it: "
                            f"{type(e).__name__}: {e})") from None
        size = self.path.stat().st_size
        self.tensors = {t.name: t for t in self._reader.tensors}
        short = [t.name for t in self._reader.tensors if t.data_offset + t.n_bytes > size]
        if short:
            raise GGUFError(f"{self.path}: truncated GGUF file ({size} bytes): the data of {len(short)} tensor(s) "
                            f"runs past its end, first {short[0]!r}")
        arch = self.value(gguf.Keys.General.ARCHITECTURE)
        if not isinstance(arch, str):
            raise GGUFError(f"{self.path}: no {gguf.Keys.General.ARCHITECTURE} in its metadata")
        self.architecture = arch

    def keys(self) -> list[str]:
        return [k for k in self._reader.fields if not k.startswith("GGUF.")]

    def __contains__(self, key: str) -> bool:
        return key in self._reader.fields

    def value(self, key: str, default: Any = None) -> Any:
        field = self._reader.get_field(key)
        return default if field is None else field.contents()

    def value_type(self, key: str) -> gguf.GGUFValueType | None:
        field = self._reader.get_field(key)
        return None if field is None else field.types[0]

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in row-major (PyTorch) order: ggml lists the fastest-moving dimension first."""
        return tuple(int(d) for d in reversed(self.tensors[name].shape))

    def qtype(self, name: str) -> gguf.GGMLQuantizationType:
        return self.tensors[name].tensor_type

    def undequantizable(self) -> list[str]:
        """'name (TYPE)' for every tensor whose type `gguf.quants.dequantize` does not implement."""
        return [f"{name} ({t.tensor_type.name})" for name, t in self.tensors.items()
                if not dequantizable(t.tensor_type)]

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 of shape `shape(name)`, exactly as `gguf.quants.dequantize` computes it."""
        tensor = self.tensors[name]
        if not dequantizable(tensor.tensor_type):
            raise GGUFError(f"{self.path}: tensor {name!r} is {tensor.tensor_type.name}, which the gguf library "
                            f"cannot dequantise")
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        return np.asarray(values, np.float32).reshape(self.shape(name))

    def q8_0(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A 2-D tensor [N, K] as Q8_0 rows: (int8 values [N, K], float16 scales [N, K/32]), whose product is
        what `dequantize` gives. A Q8_0 tensor's bytes are split as they are; an F32 / F16 / BF16 one is
        quantised by `gguf.quants.quantize` first (what llama.cpp would store). Other types are refused: making
        int8 of their dequantised values would quantise twice."""
        tensor, q8 = self.tensors[name], gguf.GGMLQuantizationType.Q8_0
        shape = self.shape(name)
        if tensor.tensor_type not in _Q8_0_SOURCES or len(shape) != 2:
            raise GGUFError(f"{self.path}: tensor {name!r} is {tensor.tensor_type.name} of shape {list(shape)}; int8 "
                            f"loading takes 2-D Q8_0 tensors (or F32 / F16 / BF16 ones, quantised as Q8_0); load the "
                            f"file without dtype='int8' to dequantise it")
        if tensor.tensor_type == q8:
            raw = np.asarray(tensor.data).reshape(shape[0], -1)  # [N, K/32 * 34] bytes
        else:
            if shape[1] % gguf.GGML_QUANT_SIZES[q8][0]:
                raise GGUFError(f"{self.path}: tensor {name!r} has rows of {shape[1]} values, not a multiple of "
                                f"Q8_0's {gguf.GGML_QUANT_SIZES[q8][0]}; it cannot be int8 in blocks")
            raw = gguf.quants.quantize(self.dequantize(name), q8)
        block, size = gguf.GGML_QUANT_SIZES[q8]  # 32 values in 34 bytes: a float16 scale, then 32 int8
        blocks = np.ascontiguousarray(raw).reshape(shape[0], shape[1] // block, size)
        scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0]
        values = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(shape)
        return values, scales
