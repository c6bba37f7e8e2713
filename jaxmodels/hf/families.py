"""Model families known to the converter: config class, model class, key table, tied copies, HF config."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxmodels.hf.tables import HYFORMER, LLAMA, KeyTable

# transformers' bookkeeping keys that a Hyformer config.json written by transformers also carries.
_HF_BOOKKEEPING = ("architectures", "auto_map", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
                   "tie_word_embeddings", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "output_attentions",
                   "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type")
HYFORMER_FIELDS = ("vocab_size", "d_model", "n_heads", "n_layers")


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str
    table: KeyTable
    classes: Callable[[], tuple[type, type]]  # -> (config class, model class), imported lazily
    config_from_hf: Callable[[dict, str], Any]
    config_to_hf: Callable[[Any], dict]
    tied: Callable[[Any], dict[str, str]]  # config -> {stored copy key: stored source key}


def _llama_classes():
    from jaxmodels.llama import LlamaConfig, LlamaForCausalLM

    return LlamaConfig, LlamaForCausalLM


def _qwen2_classes():
    from jaxmodels.llama import LlamaForCausalLM, Qwen2Config

    return Qwen2Config, LlamaForCausalLM


def _hyformer_classes():
    from jaxmodels.hyformer import Hyformer, HyformerConfig

    return HyformerConfig, Hyformer


def _hyformer_from_hf(cfg: dict, source: str):
    from jaxmodels.hyformer import HyformerConfig

    cfg = {k: v for k, v in cfg.items() if k not in _HF_BOOKKEEPING}
    return HyformerConfig.from_dict(cfg, source=source)


def _hyformer_to_hf(config) -> dict:
    return {**config.to_dict(), "architectures": ["HyformerForCausalLM"], "tie_word_embeddings": True}


def _lm_head_tie(config) -> dict[str, str]:
    return {"lm_head.weight": "model.embed_tokens.weight"} if config.tie_word_embeddings else {}


FAMILIES = {
    "llama": Family("llama", LLAMA, _llama_classes, lambda c, s: _llama_classes()[0].from_hf_config(c, source=s),
                    lambda c: c.to_hf_config(), _lm_head_tie),
    "qwen2": Family("qwen2", LLAMA, _qwen2_classes, lambda c, s: _qwen2_classes()[0].from_hf_config(c, source=s),
                    lambda c: c.to_hf_config(), _lm_head_tie),
    "hyformer": Family("hyformer", HYFORMER, _hyformer_classes, _hyformer_from_hf, _hyformer_to_hf,
                       lambda c: {"heads.lm.weight": "embed.weight", "heads.mlm.weight": "embed.weight"}),
}


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (expected a checkpoint directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def detect_model_type(cfg: dict, source: str, model_type: str | None = None) -> str:
    """model_type from the argument, else config.json, else the original Hyformer's fields."""
    found = model_type or cfg.get("model_type")
    if found is None and all(k in cfg for k in HYFORMER_FIELDS):
        found = "hyformer"
    if found is None:
        raise ValueError(f"{source}: config.json has no model_type and is not an original Hyformer config; "
                         f"pass --model-type (supported: {', '.join(sorted(FAMILIES))})")
    if found not in FAMILIES:
        raise ValueError(f"{source}: unsupported model_type {found!r}; supported: {', '.join(sorted(FAMILIES))}")
    return found
