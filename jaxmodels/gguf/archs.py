"""GGUF architectures jaxmodels reads: one row each, and what llama.cpp's converter did to their tensors.

A row names the llama.cpp architecture (`gguf.MODEL_ARCH`), the jaxmodels family it becomes, and the tensor
transforms to undo. Tensor names come from the `gguf` library's own name map (`gguf.get_tensor_name_map`,
Hugging Face name -> GGUF name), applied to the Hugging Face keys of the family's key table, so a row needs no
names of its own. The metadata becomes a transformers config dict, which the family then reads through its own
config policy (so whatever the family cannot represent is refused there, by name).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gguf
import numpy as np

from jaxmodels.gguf.reader import GGUFError, GGUFFile

LLM, ATTN, ROPE, TOK = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope, gguf.Keys.Tokenizer


@dataclasses.dataclass(frozen=True)
class RopePairs:
    """llama.cpp's q/k row permutation: transformers' half-split RoPE rows [N, 2, H/2] <-> the interleaved
    pairs [N, H/2, 2] llama.cpp rotates (convert_hf_to_gguf.py, LlamaModel.permute). Rows of a weight
    [N*H, D] or a bias [N*H]; `heads` is N (the kv head count for k)."""

    heads: int
    name: str = "rope_pairs"

    def _swap(self, x: np.ndarray, split: tuple[int, int]) -> np.ndarray:
        grouped = x.reshape(self.heads, *split, -1)
        return np.ascontiguousarray(grouped.swapaxes(1, 2)).reshape(x.shape)

    def to_gguf(self, x: np.ndarray) -> np.ndarray:
        """Half-split rows -> interleaved pairs (what llama.cpp writes)."""
        return self._swap(x, (2, x.shape[0] // self.heads // 2))

    def from_gguf(self, x: np.ndarray) -> np.ndarray:
        """Interleaved pairs -> half-split rows (what transformers and jaxmodels compute with)."""
        return self._swap(x, (x.shape[0] // self.heads // 2, 2))


@dataclasses.dataclass(frozen=True)
class Arch:
    """One GGUF architecture. `rope_pairs`: llama.cpp permuted the q/k rows (it does for `llama`, whose
    ggml RoPE rotates adjacent pairs; NEOX-style architectures such as qwen2 are written as they are)."""

    gguf_arch: gguf.MODEL_ARCH
    model_type: str
    rope_pairs: bool = False

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def name_map(self, n_blocks: int) -> gguf.TensorNameMap:
        return gguf.get_tensor_name_map(self.gguf_arch, n_blocks)

    def transforms(self, hf_config: dict) -> dict[gguf.MODEL_TENSOR, Any]:
        """{tensor kind: transform with from_gguf / to_gguf} for the tensors llama.cpp changed."""
        if not self.rope_pairs:
            return {}
        heads = hf_config["num_attention_heads"]
        return {gguf.MODEL_TENSOR.ATTN_Q: RopePairs(heads),
                gguf.MODEL_TENSOR.ATTN_K: RopePairs(hf_config.get("num_key_value_heads") or heads)}


# Mistral checkpoints arrive as `llama` (llama.cpp writes them so, without their sliding window). Qwen3's
# q/k norms are found by the name map like any other tensor; its `key_length` metadata gives head_dim.
# Gemma 3 has no row: llama.cpp stores its norms as 1 + w and fixes its local rope base, sliding-window
# pattern and query scale in code rather than in the file, so the file alone does not say what it computes.
ARCHS = {a.name: a for a in (
    Arch(gguf.MODEL_ARCH.LLAMA, "llama", rope_pairs=True),
    Arch(gguf.MODEL_ARCH.QWEN2, "qwen2"),
    Arch(gguf.MODEL_ARCH.QWEN3, "qwen3"),
)}

# Metadata that would change the computation of every architecture above; refused when set to anything but
# the harmless value (None: refused whenever present).
_REFUSED = {LLM.EXPERT_COUNT: 0, LLM.EXPERT_USED_COUNT: 0, ATTN.SLIDING_WINDOW: None,
            LLM.ATTN_LOGIT_SOFTCAPPING: None, LLM.FINAL_LOGIT_SOFTCAPPING: None, LLM.LOGIT_SCALE: None,
            LLM.EMBEDDING_SCALE: None, LLM.RESIDUAL_SCALE: None, ATTN.CLAMP_KQV: None, ATTN.SCALE: None}
_ROPE_SCALINGS = ("none", "linear")


def arch_of(file: GGUFFile) -> Arch:
    if file.architecture not in ARCHS:
        raise GGUFError(f"{file.path}: GGUF architecture {file.architecture!r} is not supported; supported: "
                        f"{', '.join(sorted(ARCHS))}")
    return ARCHS[file.architecture]


def hf_config(file: GGUFFile, arch: Arch) -> dict[str, Any]:
    """The GGUF metadata as a transformers config dict of the family (Llama / Qwen2 / Qwen3 config keys)."""
    a = arch.name

    def get(key: str, default: Any = None) -> Any:
        return file.value(key.format(arch=a), default)

    problems = []
    for key, harmless in _REFUSED.items():
        value = get(key)
        if value is not None and (harmless is None or value != harmless):
            problems.append(f"{key.format(arch=a)}={value!r}")
    required = {LLM.BLOCK_COUNT: "num_hidden_layers", LLM.EMBEDDING_LENGTH: "hidden_size",
                LLM.FEED_FORWARD_LENGTH: "intermediate_size", ATTN.HEAD_COUNT: "num_attention_heads"}
    missing = [k.format(arch=a) for k in required if get(k) is None]
    if missing:
        raise GGUFError(f"{file.path}: metadata lacks {', '.join(missing)}")
    cfg: dict[str, Any] = {"model_type": arch.model_type, **{hf: get(k) for k, hf in required.items()}}
    heads = cfg["num_attention_heads"]
    cfg["num_key_value_heads"] = get(ATTN.HEAD_COUNT_KV, heads)
    head_dim = get(ATTN.KEY_LENGTH) or cfg["hidden_size"] // heads
    cfg["head_dim"] = head_dim
    rotary = get(ROPE.DIMENSION_COUNT)
    if rotary is not None and rotary != head_dim:
        problems.append(f"{ROPE.DIMENSION_COUNT.format(arch=a)}={rotary} (partial rotary; head_dim is {head_dim})")
    value_length = get(ATTN.VALUE_LENGTH)
    if value_length is not None and value_length != head_dim:
        problems.append(f"{ATTN.VALUE_LENGTH.format(arch=a)}={value_length} (differs from the key length {head_dim})")
    cfg["max_position_embeddings"] = get(LLM.CONTEXT_LENGTH, 2048)
    eps = get(ATTN.LAYERNORM_RMS_EPS)
    if eps is not None:
        cfg["rms_norm_eps"] = eps
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": get(ROPE.FREQ_BASE, 10000.0)}
    scaling = get(ROPE.SCALING_TYPE, "none")
    if scaling not in _ROPE_SCALINGS:
        problems.append(f"{ROPE.SCALING_TYPE.format(arch=a)}={scaling!r} (implemented: {', '.join(_ROPE_SCALINGS)})")
    elif scaling == "linear":
        rope.update(rope_type="linear", factor=get(ROPE.SCALING_FACTOR))
    cfg["rope_parameters"] = rope
    if problems:
        raise GGUFError(f"{file.path}: unsupported {a} metadata: " + "; ".join(problems))
    tokens = file.value(TOK.LIST)
    cfg["vocab_size"] = get(LLM.VOCAB_SIZE) or (len(tokens) if tokens else None)
    if cfg["vocab_size"] is None:
        raise GGUFError(f"{file.path}: metadata gives no vocabulary size ({LLM.VOCAB_SIZE.format(arch=a)} or "
                        f"{TOK.LIST})")
    # llama.cpp leaves out output.weight exactly when the head is tied to the embedding.
    cfg["tie_word_embeddings"] = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight" not in file.tensors
    for hf_key, key in (("bos_token_id", TOK.BOS_ID), ("eos_token_id", TOK.EOS_ID), ("pad_token_id", TOK.PAD_ID)):
        cfg[hf_key] = file.value(key)
    return cfg
