"""Applying an SVF expert (written by `jaxmodels.svf`) to a PyTorch transformers model, in place.

Works on any module whose parameters carry the expert's Hugging Face names: a `Qwen2ForCausalLM` /
`LlamaForCausalLM` ("model.layers.0.mlp.gate_proj.weight"), its inner `model`, or the language model of a
Qwen2.5-VL model ("model.language_model.layers.0...", or "layers.0..." on the language model itself).
torch.nn.Linear.weight is [O, I], the transpose of our kernel: its SVD has the same singular values, so the
expert's z apply unchanged: W' = U diag(S sigmoid(z)) V^T * (sum S / sum(S sigmoid(z))), in float64.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from jaxmodels.svf.expert import ExpertMismatchError, check_fits, read_expert

# How an expert's names (written from a CausalLM's point of view) may appear inside other modules.
_PREFIXES = ("", "model.language_model.", "language_model.")


def resolve_names(names: list[str], params: dict[str, torch.nn.Parameter]) -> dict[str, str] | None:
    """{expert name: parameter name} under the first naming rule that finds every name, else None."""
    for strip in ("", "model."):
        for prefix in _PREFIXES:
            mapping = {}
            for name in names:
                if not name.startswith(strip):
                    break
                candidate = prefix + name[len(strip):]
                if candidate not in params:
                    break
                mapping[name] = candidate
            else:
                return mapping
    return None


def svf_compose(weight: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """W'(z) for weight [O, I] and z [min(O, I)], computed in float64, returned in weight's dtype."""
    w = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    scaled = s * torch.sigmoid(z.to(torch.float64))
    return ((u * scaled) @ vh * (s.sum() / scaled.sum())).to(weight.dtype)


@torch.no_grad()
def patched_weights(params: dict[str, torch.nn.Parameter], path: str | os.PathLike, *,
                    target: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields (parameter name, W'(z)) for every matrix of the expert at `path`, one at a time, after checking the
    whole expert against `params` (names under the known prefixes, shapes, ranks; `target` names the model in
    errors). Raises ExpertMismatchError listing the differences; nothing is yielded then."""
    z, manifest = read_expert(path)
    mapping = resolve_names(sorted(z), params)
    if mapping is None:
        found = sorted(n for n in params if n.endswith(".weight"))[:4]
        raise ExpertMismatchError(f"SVF expert {path} does not fit {target}: its parameter names "
                                  f"(e.g. {sorted(z)[:2]}) are not in the model, even under the prefixes "
                                  f"{[p for p in _PREFIXES if p]} (the model has e.g. {found})")
    expected = {name: (tuple(params[t].shape), min(params[t].shape)) for name, t in mapping.items()}
    check_fits(path, z, manifest, expected, model_type=None, target=target)
    for name, t in mapping.items():
        yield t, svf_compose(params[t], torch.from_numpy(np.asarray(z[name])))


@torch.no_grad()
def apply_expert(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Patches model's weights with the expert at `path`; returns {parameter name: original weight} so that
    `restore_weights(model, originals)` puts the base weights back. Refuses an expert made for another model."""
    params = dict(model.named_parameters())
    originals = {}
    for name, weight in patched_weights(params, path, target=type(model).__name__):
        originals[name] = params[name].detach().clone()
        params[name].copy_(weight)
    return originals


@torch.no_grad()
def restore_weights(model: torch.nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Undoes apply_expert (e.g. before routing the next query to another expert or to the base model)."""
    params = dict(model.named_parameters())
    for name, value in originals.items():
        params[name].copy_(value)
