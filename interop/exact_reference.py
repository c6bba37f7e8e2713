"""A float64 reference that is float64 throughout: transformers' model with its norms and RoPE tables in float64.

transformers' decoders cast to float32 inside two kinds of module even when the model runs in float64: the
RMSNorms (`hidden_states.to(torch.float32)` before the statistics) and the rotary embedding (`.float()` on the
frequencies before cos/sin). A `model.to(torch.float64)` run therefore rounds to float32 at every norm (61 of
them on a 30-layer model) and in every RoPE table, and those roundings are the ones transformers' own float32
run makes too, so its float32 error is understated against that reference while any other implementation's
is not. `exact_float64(model)` rebinds the forward of those modules to the same formulas in float64:

* RMSNorm (transformers' Llama-style norms: `weight` and `variance_epsilon`):
  weight * x / sqrt(mean(x^2) + eps);
* rotary embedding (`inv_freq`, `attention_scaling`, `forward(x, position_ids)`): cos/sin of
  position * inv_freq, the inverse frequencies as the model holds them (already scaled by its rope type).

Modules of other kinds are left as transformers wrote them and listed in the result's `kept`.
"""

from __future__ import annotations

import dataclasses
import inspect
import types

import torch


@dataclasses.dataclass(frozen=True)
class Patched:
    norms: int
    rotary: int
    kept: tuple[str, ...]  # class names of norm / rotary modules left as they were

    @property
    def exact(self) -> bool:
        return not self.kept


def _norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _rotary_forward(self, x: torch.Tensor, position_ids: torch.Tensor):
    freqs = self.inv_freq.to(torch.float64)[None, :, None] * position_ids.to(torch.float64)[:, None, :]
    emb = torch.cat((freqs, freqs), dim=1).transpose(1, 2)  # [B, T, head_dim]
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def _is_norm(module) -> bool:
    return type(module).__name__.endswith("RMSNorm")


def _is_rotary(module) -> bool:
    return type(module).__name__.endswith("RotaryEmbedding")


def exact_float64(model: torch.nn.Module) -> Patched:
    """Rebinds, in place, the float32-casting norms and rotary embeddings of a float64 transformers model."""
    if next(model.parameters()).dtype != torch.float64:
        raise ValueError("exact_float64 expects a model loaded with dtype=torch.float64")
    norms = rotary = 0
    kept = set()
    for module in model.modules():
        if _is_norm(module):
            if hasattr(module, "variance_epsilon") and isinstance(getattr(module, "weight", None), torch.Tensor):
                module.forward = types.MethodType(_norm_forward, module)
                norms += 1
            else:
                kept.add(type(module).__name__)
        elif _is_rotary(module):
            params = list(inspect.signature(type(module).forward).parameters)
            if params == ["self", "x", "position_ids"] and hasattr(module, "inv_freq"):
                module.forward = types.MethodType(_rotary_forward, module)
                rotary += 1
            else:
                kept.add(type(module).__name__)
    return Patched(norms, rotary, tuple(sorted(kept)))
