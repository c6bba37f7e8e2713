"""The same decoder with its hidden channels reordered: an equally accurate float32 computation, rounded
differently.

Permuting the d_model channels of the residual stream (the embedding's columns, every norm weight, the input
columns of q/k/v/gate/up and the LM head, the output rows of o/down) gives a model that computes exactly the
same function, whose dot products over d_model sum in another order. Its float32 error against float64 is
another draw from the same distribution of rounding errors. `jaxmodels-parity` measures each framework on a few
such orderings and compares medians, because one draw is noisy: on SmolLM2-135M and a 37-token prompt,
transformers' own max |error| ranges over 2.5x across six orderings.

The rules cover the Llama-style module names (Llama, Mistral, Qwen2, Qwen3); a parameter they do not place
is refused by name rather than guessed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

_COLUMNS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight",
            "embed_tokens.weight", "lm_head.weight")
_ROWS = ("o_proj.weight", "o_proj.bias", "down_proj.weight", "down_proj.bias")
_UNCHANGED = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "q_norm.weight", "k_norm.weight")


def reordered(model: torch.nn.Module, perm: np.ndarray) -> torch.nn.Module:
    """A copy of `model` with its hidden channels in the order `perm` (a permutation of range(d_model))."""
    hidden = model.config.hidden_size
    if sorted(perm.tolist()) != list(range(hidden)):
        raise ValueError(f"not a permutation of range({hidden})")
    index = torch.from_numpy(np.asarray(perm, np.int64))
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():  # a tied LM head appears once, as the embedding
            if name.endswith(_UNCHANGED):
                continue
            if name.endswith(_COLUMNS):
                p.copy_(p[:, index])
            elif name.endswith(_ROWS) or ("norm" in name and p.shape == (hidden,)):
                p.copy_(p[index])
            else:
                raise ValueError(f"cannot reorder the hidden channels of parameter {name} {tuple(p.shape)}")
    return out


def orderings(hidden: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` channel orders: the model's own first, then random permutations."""
    rng = np.random.default_rng(seed)
    return [np.arange(hidden)] + [rng.permutation(hidden) for _ in range(count - 1)]
