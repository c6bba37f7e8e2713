"""A streaming safetensors writer: tensors are produced and written one at a time.

safetensors files are an 8-byte little-endian header length, a JSON header (dtype, shape and byte
offsets of every tensor) and the raw bytes. The header only needs shapes and dtypes, so it is written
first and each tensor's bytes follow as they are produced: peak memory is one tensor, not one shard.
Shards hold at most `max_shard_bytes`; several shards get `model.safetensors.index.json` with the exact
total size, as transformers writes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxmodels.hf.source import INDEX, SINGLE

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
DTYPE_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
               np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
               np.dtype(np.int16): "I16", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(bool): "BOOL"}


def parse_size(text: str | int) -> int:
    """"5GB" -> 5 * 10**9, "500MiB" -> 500 * 2**20, 1000 -> 1000."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", text.upper())
    if not m:
        raise ValueError(f"--max-shard-size {text!r}: expected a size such as 500MB, 2GB or 1GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


@dataclasses.dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its key, shape and dtype, and a function that produces its values."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def _write_file(path: Path, tensors: Sequence[PlannedTensor], metadata: dict[str, str] | None) -> None:
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for t in tensors:
        header[t.key] = {"dtype": DTYPE_NAMES[np.dtype(t.dtype)], "shape": list(t.shape),
                         "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for t in tensors:
            array = np.asarray(t.produce())
            if array.shape != t.shape or array.dtype != t.dtype:
                raise ValueError(f"tensor {t.key!r} came out as {array.dtype}{list(array.shape)}, "
                                 f"planned {np.dtype(t.dtype)}{list(t.shape)}")
            # Raw bytes (fast for extension dtypes such as bfloat16), no copy: peak memory stays one tensor.
            np.ascontiguousarray(array).reshape(-1).view(np.uint8).tofile(f)
        f.flush()
        os.fsync(f.fileno())


def write_shards(tensors: Sequence[PlannedTensor], directory: Path, *, max_shard_bytes: int | None = None,
                 metadata: dict[str, str] | None = None) -> dict:
    """Writes the tensors into `directory` (which must exist); returns the index {"metadata", "weight_map"}."""
    keys = [t.key for t in tensors]
    if len(set(keys)) != len(keys):
        raise ValueError(f"tensor keys repeat: {sorted({k for k in keys if keys.count(k) > 1})}")
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if max_shard_bytes and shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    count = len(shards)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = SINGLE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        _write_file(directory / name, shard, metadata)
        weight_map.update({t.key: name for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": dict(sorted(weight_map.items()))}
    if count > 1:
        (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index
