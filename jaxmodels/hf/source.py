"""Read-only access to a safetensors checkpoint directory, one tensor at a time (memory-mapped).

A directory holds `model.safetensors`, or shards listed by `model.safetensors.index.json`. Every
problem names the file (and key) it is about. An index is checked before a shard is opened: its `weight_map`
names files inside the directory only (no `..`, absolute paths or symbolic links leading out), every tensor sits
in exactly one shard, and `metadata.total_size`, when given, is the shards' tensor bytes. A tensor holding NaN or
infinite values is read, with a NonFiniteWeights warning naming it (`-W error::jaxmodels.hf.source.NonFiniteWeights`
makes that an error).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
                "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")  # safetensors names
TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be read as asked."""


class NonFiniteWeights(UserWarning):
    """A tensor read from a checkpoint holds NaN or infinite values."""


def _open(path: Path):
    try:
        return safe_open(str(path), framework="flax")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _header(path: Path) -> tuple[int, dict]:
    """(offset of the data section, {key: {"dtype", "shape", "data_offsets"}}) of a safetensors file."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return 8 + size, header


def _inside(directory: Path, name: str) -> bool:
    """Whether the shard `name` of an index resolves (symbolic links followed) to a file inside `directory`."""
    root = os.path.realpath(directory)
    return os.path.commonpath([root, os.path.realpath(directory / name)]) == root


def read_index(index: Path) -> tuple[dict[str, str], int | None]:
    """(weight_map, total_size or None) of a safetensors index, every shard name checked to stay inside the
    index's directory."""
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index}: not valid JSON ({e})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        got = (f"a JSON {type(data).__name__}" if not isinstance(data, dict) else "no weight_map"
               if weight_map is None else f"a weight_map of type {type(weight_map).__name__}")
        raise CheckpointError(f"{index}: expected an object whose weight_map is an object {{tensor name: shard "
                              f"file}}; got {got}")
    bad = sorted(f"{k!r}: {f!r}" for k, f in weight_map.items()
                 if not isinstance(f, str) or not f or os.path.isabs(f) or ".." in Path(f).parts
                 or not _inside(index.parent, f))
    if bad:
        raise CheckpointError(f"{index}: weight_map names shard files outside the checkpoint directory (expected "
                              f"file names inside {index.parent}): {', '.join(bad[:5])}")
    metadata = data.get("metadata")
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float)) or total != int(total)):
        raise CheckpointError(f"{index}: metadata.total_size must be a whole number of bytes, got {total!r}")
    return weight_map, None if total is None else int(total)


class SafetensorsCheckpoint:
    """keys(), shape(key), dtype(key), get(key) -> np.ndarray over one or several shard files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index, single = self.directory / INDEX, self.directory / SINGLE
        if index.is_file():
            weight_map, total_size = read_index(index)
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.directory / f).is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard(s) that do not exist: {missing}")
        elif single.is_file():
            files = [SINGLE]
        else:
            torch_files = [f for f in TORCH_FILES if (self.directory / f).is_file()]
            hint = (f"; found {torch_files[0]} (a PyTorch pickle checkpoint): convert it with `jaxmodels-convert "
                    f"from-hf`, which reads it through torch.load(weights_only=True)") if torch_files else ""
            raise CheckpointError(f"{self.directory}: no {SINGLE} or {INDEX}{hint}")
        self._handles = {f: _open(self.directory / f) for f in files}  # validates each file
        self._layout = {f: _header(self.directory / f) for f in files}
        self._file_of: dict[str, str] = {}
        twice = []
        for f, handle in self._handles.items():
            for key in handle.keys():
                if key in self._file_of:
                    twice.append(f"{key!r} ({self._file_of[key]} and {f})")
                self._file_of[key] = f
        if twice:
            raise CheckpointError(f"{self.directory}: tensors stored in more than one shard: {', '.join(twice[:10])}")
        if index.is_file():
            absent = sorted(k for k, f in weight_map.items() if self._file_of.get(k) != f)
            if absent:
                raise CheckpointError(f"{index} lists tensors that are not in their shard: {absent[:10]}")
            stored = sum(end - begin for _, entries in self._layout.values()
                         for begin, end in (e["data_offsets"] for e in entries.values()))
            if total_size is not None and total_size != stored:
                raise CheckpointError(f"{index}: metadata.total_size is {total_size} bytes, but the shards hold "
                                      f"{stored} bytes of tensors")
        self.files = files

    def keys(self) -> list[str]:
        return sorted(self._file_of)

    def __contains__(self, key: str) -> bool:
        return key in self._file_of

    def _slice(self, key: str):
        return self._handles[self._file_of[key]].get_slice(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._slice(key).get_shape())

    def dtype(self, key: str) -> str:
        return self._slice(key).get_dtype()

    def numpy_dtype(self, key: str) -> np.dtype:
        return np.dtype(NUMPY_DTYPES[self.dtype(key)])

    def get(self, key: str) -> np.ndarray:
        """The tensor, read with plain file reads (no memory map stays resident: RSS grows by this tensor only)."""
        name = self._file_of[key]
        data_start, entries = self._layout[name]
        begin, end = entries[key]["data_offsets"]
        dtype = np.dtype(NUMPY_DTYPES[entries[key]["dtype"]])
        shape = tuple(entries[key]["shape"])
        try:
            # Read raw bytes and reinterpret: numpy has no fast path for extension dtypes such as bfloat16.
            array = np.fromfile(self.directory / name, dtype=np.uint8, count=end - begin,
                                offset=data_start + begin).view(dtype)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.directory / name}: cannot read tensor {key!r} ({e})") from None
        if array.size != int(np.prod(shape)):
            raise CheckpointError(f"{self.directory / name}: tensor {key!r} is cut short ({array.nbytes} of "
                                  f"{end - begin} bytes: a truncated file?)")
        if entries[key]["dtype"] in FLOAT_DTYPES:
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                warnings.warn(f"{self.directory / name}: tensor {key!r} holds {bad} NaN or infinite value(s) of "
                              f"{array.size}", NonFiniteWeights, stacklevel=2)
        return array.reshape(shape)

    def metadata(self) -> dict:
        return self._handles[self.files[0]].metadata() or {}

    def total_bytes(self) -> int:
        return sum((self.directory / f).stat().st_size for f in self.files)

    def largest_file_bytes(self) -> int:
        return max((self.directory / f).stat().st_size for f in self.files)
