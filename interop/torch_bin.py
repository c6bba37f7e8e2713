"""PyTorch pickle checkpoints (`pytorch_model.bin`, sharded or not), read only with weights_only=True."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

from jaxmodels.hf.source import CheckpointError

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
          torch.bfloat16: ml_dtypes.bfloat16, torch.int64: np.int64, torch.int32: np.int32, torch.uint8: np.uint8,
          torch.int8: np.int8, torch.bool: np.bool_}
_NAMES = {np.dtype(v): k for k, v in {"F32": np.float32, "F64": np.float64, "F16": np.float16,
                                       "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
                                       "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}.items()}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.contiguous().numpy()


class TorchBinCheckpoint:
    """The same interface as SafetensorsCheckpoint over pytorch_model.bin (or its shards)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / "pytorch_model.bin.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [f for f in ("pytorch_model.bin", "model.pt", "model.pth") if (self.directory / f).is_file()][:1]
        if not files:
            raise CheckpointError(f"{self.directory}: no safetensors or PyTorch weights found")
        self._tensors: dict[str, np.ndarray] = {}
        for name in files:
            path = self.directory / name
            if not path.is_file():
                raise CheckpointError(f"{index} names shard {name!r}, which does not exist")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch raises many types for a bad pickle
                raise CheckpointError(f"{path}: not a loadable weights-only PyTorch checkpoint ({e})") from None
            if not isinstance(state, dict):
                raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
            for key, t in state.items():
                if key.startswith("_orig_mod."):  # torch.compile'd modules
                    key = key[len("_orig_mod."):]
                if t.dtype not in _NUMPY:
                    raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {t.dtype}")
                self._tensors[key] = _to_numpy(t)
        self.files = files

    def keys(self) -> list[str]:
        return sorted(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def dtype(self, key: str) -> str:
        return _NAMES[self._tensors[key].dtype]

    def numpy_dtype(self, key: str) -> np.dtype:
        return self._tensors[key].dtype

    def get(self, key: str) -> np.ndarray:
        return self._tensors[key]

    def total_bytes(self) -> int:
        return sum((self.directory / f).stat().st_size for f in self.files)
