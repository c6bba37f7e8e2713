"""Key tables: (Hugging Face key template, our parameter path template, transform).

`{i}` stands for a layer index. A table is used in both directions; `KeyTable.to_ours` and `to_hf`
map one key each way and return None for keys the table does not know.
"""

from __future__ import annotations

import dataclasses
import re

from jaxmodels.hf.transforms import FLATTEN, IDENTITY, LINEAR, LINEAR_FROM_HEADS


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str
    ours: str
    transform: object


class KeyTable:
    def __init__(self, name: str, rules: list[tuple[str, str, object]]):
        self.name = name
        self.rules = [Rule(*r) for r in rules]
        self._hf = [(_pattern(r.hf), r) for r in self.rules]
        self._ours = [(_pattern(r.ours), r) for r in self.rules]

    def rules_as_tuples(self) -> list[tuple[str, str, object]]:
        """The rules in the form the constructor takes, to build a table on this one."""
        return [(r.hf, r.ours, r.transform) for r in self.rules]

    def to_ours(self, hf_key: str):
        """-> (our key, transform) or None."""
        for pattern, rule in self._hf:
            m = pattern.match(hf_key)
            if m:
                return rule.ours.format(**m.groupdict()), rule.transform
        return None

    def to_hf(self, our_key: str):
        """-> (hf key, transform) or None."""
        for pattern, rule in self._ours:
            m = pattern.match(our_key)
            if m:
                return rule.hf.format(**m.groupdict()), rule.transform
        return None


def _block_rules(hf_layer: str, attn: str, input_norm: str, post_norm: str) -> list[tuple[str, str, object]]:
    rules = [(f"{hf_layer}.{input_norm}.weight", "blocks.{i}.input_norm.weight", IDENTITY),
             (f"{hf_layer}.{post_norm}.weight", "blocks.{i}.post_attn_norm.weight", IDENTITY)]
    for proj in ("q", "k", "v"):
        rules += [(f"{hf_layer}.{attn}.{proj}_proj.weight", f"blocks.{{i}}.attn.{proj}_proj.kernel", LINEAR),
                  (f"{hf_layer}.{attn}.{proj}_proj.bias", f"blocks.{{i}}.attn.{proj}_proj.bias", FLATTEN)]
    rules += [(f"{hf_layer}.{attn}.o_proj.weight", "blocks.{i}.attn.o_proj.kernel", LINEAR_FROM_HEADS),
              (f"{hf_layer}.{attn}.o_proj.bias", "blocks.{i}.attn.o_proj.bias", IDENTITY)]
    for proj in ("gate", "up", "down"):
        rules += [(f"{hf_layer}.mlp.{proj}_proj.weight", f"blocks.{{i}}.mlp.{proj}_proj.kernel", LINEAR),
                  (f"{hf_layer}.mlp.{proj}_proj.bias", f"blocks.{{i}}.mlp.{proj}_proj.bias", IDENTITY)]
    return rules


# transformers' LlamaForCausalLM / Qwen2ForCausalLM (Qwen2.5 text models use the same keys).
LLAMA = KeyTable("llama", [
    ("model.embed_tokens.weight", "embed.weight", IDENTITY),
    *_block_rules("model.layers.{i}", "self_attn", "input_layernorm", "post_attention_layernorm"),
    ("model.norm.weight", "final_norm.weight", IDENTITY),
    ("lm_head.weight", "lm_head.weight", IDENTITY),
])

_QK_NORMS = [("model.layers.{i}.self_attn.q_norm.weight", "blocks.{i}.attn.q_norm.weight", IDENTITY),
             ("model.layers.{i}.self_attn.k_norm.weight", "blocks.{i}.attn.k_norm.weight", IDENTITY)]

# transformers' Qwen3ForCausalLM: Llama's keys and the per-head q/k norms. (MistralForCausalLM uses LLAMA.)
QWEN3 = KeyTable("qwen3", [*LLAMA.rules_as_tuples(), *_QK_NORMS])

# transformers' Gemma3ForCausalLM. Its post_attention_layernorm normalises the attention output (our
# attn_out_norm) and pre_feedforward_layernorm is the norm in front of the MLP (our post_attn_norm, as in Llama).
GEMMA3 = KeyTable("gemma3", [
    ("model.embed_tokens.weight", "embed.weight", IDENTITY),
    *_block_rules("model.layers.{i}", "self_attn", "input_layernorm", "pre_feedforward_layernorm"),
    ("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.attn_out_norm.weight", IDENTITY),
    ("model.layers.{i}.post_feedforward_layernorm.weight", "blocks.{i}.mlp_out_norm.weight", IDENTITY),
    *_QK_NORMS,
    ("model.norm.weight", "final_norm.weight", IDENTITY),
    ("lm_head.weight", "lm_head.weight", IDENTITY),
])

# The original Hyformer (joint_improvement, af5f42d) and our PyTorch twin: the same key names as ours,
# torch layouts. heads.lm / heads.mlm are the embedding (tied) and are handled by the loader.
HYFORMER = KeyTable("hyformer", [
    ("embed.weight", "embed.weight", IDENTITY),
    *_block_rules("blocks.{i}", "attn", "input_norm", "post_attn_norm"),
    ("final_norm.weight", "final_norm.weight", IDENTITY),
    ("final_norm.bias", "final_norm.bias", IDENTITY),
    ("heads.prediction.norm.weight", "prediction_head.norm.weight", IDENTITY),
    ("heads.prediction.norm.bias", "prediction_head.norm.bias", IDENTITY),
    ("heads.prediction.classifier.weight", "prediction_head.classifier.kernel", LINEAR),
    ("heads.prediction.classifier.bias", "prediction_head.classifier.bias", IDENTITY),
])
