"""Loading Qwen2.5-VL from a local directory or a hub id: checks, dtype, device, attention implementation.

`load_hf_qwen2_5_vl_model(path, attn_implementation=...)` returns an `HFQwen2_5_VL`: transformers'
`Qwen2_5_VLForConditionalGeneration` (no math of ours on top) plus its `AutoProcessor`, and the choices made.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

MODEL_TYPE = "qwen2_5_vl"
# Fastest first; each is tried only when the previous one cannot run here.
ATTN_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


class ModelDirectoryError(ValueError):
    """A model directory that cannot serve as a Qwen2.5-VL runner (wrong type or missing files)."""


def attn_available(name: str, device: torch.device) -> str | None:
    """None if `name` can run on `device`, else the reason it cannot."""
    if name == "flash_attention_2":
        if device.type != "cuda":
            return f"flash_attention_2 needs a CUDA device (running on {device.type})"
        if importlib.util.find_spec("flash_attn") is None:
            return "flash_attention_2 needs the flash-attn package, which is not installed"
        return None
    if name == "sdpa":
        return None if hasattr(torch.nn.functional, "scaled_dot_product_attention") else \
            f"torch {torch.__version__} has no scaled_dot_product_attention"
    if name == "eager":
        return None
    raise ValueError(f"unknown attn_implementation {name!r}; expected one of {', '.join(ATTN_IMPLEMENTATIONS)}")


def resolve_attn_implementation(requested: str | None, device: torch.device) -> tuple[str, str]:
    """-> (implementation to use, a sentence saying why). Falls back down ATTN_IMPLEMENTATIONS from `requested`."""
    requested = requested or ATTN_IMPLEMENTATIONS[0]
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"unknown attn_implementation {requested!r}; expected one of "
                         f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    reasons = []
    for name in ATTN_IMPLEMENTATIONS[ATTN_IMPLEMENTATIONS.index(requested):]:
        why_not = attn_available(name, device)
        if why_not is None:
            note = f"{name} as requested" if name == requested else f"{name} ({'; '.join(reasons)})"
            return name, note
        reasons.append(why_not)
    raise RuntimeError(f"no attention implementation can run on {device}: {'; '.join(reasons)}")


def available_attn_implementations(device: torch.device | str = "cpu") -> list[str]:
    return [n for n in ATTN_IMPLEMENTATIONS if attn_available(n, torch.device(device)) is None]


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' (or None): bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def check_model_dir(path: Path) -> dict[str, Any]:
    """Refuses a local directory that is not a complete Qwen2.5-VL checkpoint; returns its config.json."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelDirectoryError(f"{path} has no config.json; expected a Qwen2.5-VL model directory "
                                  "(config.json, safetensors weights, tokenizer and processor files)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != MODEL_TYPE:
        raise ModelDirectoryError(f"{config_path}: model_type is {config.get('model_type')!r} "
                                  f"(architectures {config.get('architectures')}), expected {MODEL_TYPE!r}: "
                                  "this runner serves Qwen2.5-VL models only")
    missing = []
    if not any(all((path / f).is_file() for f in group) for group in _TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    if not (path / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json")
    if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        missing.append("image processor (preprocessor_config.json or processor_config.json)")
    if missing:
        raise ModelDirectoryError(f"{path} is missing {', '.join(missing)}; the runner needs the model's "
                                  "processor files next to its weights (save them with processor.save_pretrained)")
    return config


@dataclasses.dataclass
class HFQwen2_5_VL:
    """transformers' model and processor, with the loading choices. Calls go straight to transformers."""

    model: Any  # Qwen2_5_VLForConditionalGeneration
    processor: Any  # Qwen2_5_VLProcessor
    source: str
    attn_implementation: str
    attn_note: str
    dtype: torch.dtype
    device: torch.device

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def config(self):
        return self.model.config

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)

    def __call__(self, **kwargs):
        return self.model(**kwargs)

    def set_pixel_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        ip = self.processor.image_processor
        size = dict(ip.size or {})
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        if size.get("shortest_edge", 0) > size.get("longest_edge", float("inf")):
            raise ValueError(f"min_pixels={size['shortest_edge']} exceeds max_pixels={size['longest_edge']}")
        ip.size = size
        for attr, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            if hasattr(ip, attr):
                setattr(ip, attr, size.get(key))

    @property
    def max_pixels(self) -> int:
        return int(self.processor.image_processor.size["longest_edge"])

    @property
    def min_pixels(self) -> int:
        return int(self.processor.image_processor.size["shortest_edge"])


def load_hf_qwen2_5_vl_model(path: str | os.PathLike, attn_implementation: str | None = "flash_attention_2", *,
                             dtype: str | torch.dtype | None = "auto", device_map: str | None = None,
                             min_pixels: int | None = None, max_pixels: int | None = None) -> HFQwen2_5_VL:
    """Loads a Qwen2.5-VL model and its processor from a local directory or a hub id.

    attn_implementation: tried first, then the faster-to-slower fallbacks (flash_attention_2 -> sdpa -> eager);
    the choice and the reason are in `.attn_implementation` / `.attn_note` and logged.
    device_map: None (one device: CUDA if present, else CPU), a device string, or "auto" (needs accelerate).
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    source = str(path)
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ModelDirectoryError(f"{local} is a file; expected a Qwen2.5-VL model directory or a hub id")
        check_model_dir(local)
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path, not an "org/name" hub id
        raise ModelDirectoryError(f"{source} does not exist; expected a local Qwen2.5-VL directory or a hub id "
                                  "such as 'Qwen/Qwen2.5-VL-3B-Instruct'")
    if device_map == "auto" and importlib.util.find_spec("accelerate") is None:
        raise ValueError("device_map='auto' needs the accelerate package; install it or pass a device such as 'cpu'")
    device = torch.device(device_map if device_map not in (None, "auto") else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    attn, note = resolve_attn_implementation(attn_implementation, device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, dtype=torch_dtype, attn_implementation=attn,
            device_map=device_map if device_map == "auto" else str(device))
    except OSError as err:
        if local.exists():
            raise
        raise ModelDirectoryError(f"{source} is not a local directory and could not be loaded as a hub id "
                                  f"({str(err).splitlines()[0]}); expected an existing directory or a reachable "
                                  "hub id such as 'Qwen/Qwen2.5-VL-3B-Instruct'") from err
    if model.config.model_type != MODEL_TYPE:
        raise ModelDirectoryError(f"{source}: model_type is {model.config.model_type!r}, expected {MODEL_TYPE!r}")
    processor = AutoProcessor.from_pretrained(source)
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ModelDirectoryError(f"{source}: AutoProcessor gave a {type(processor).__name__}, expected a "
                                  "Qwen2.5-VL processor with an image processor and a tokenizer")
    processor.tokenizer.padding_side = "left"
    model.eval()
    log.info("Qwen2.5-VL %s: attention %s, %s on %s", source, attn, str(torch_dtype).removeprefix("torch."), device)
    hf = HFQwen2_5_VL(model=model, processor=processor, source=source, attn_implementation=attn, attn_note=note,
                      dtype=torch_dtype, device=device)
    hf.set_pixel_limits(min_pixels, max_pixels)
    return hf
