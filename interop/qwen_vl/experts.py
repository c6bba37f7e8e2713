"""SVF experts on the served Qwen2.5-VL model: loaded once by name, applied per request, base weights restored.

An expert (written by `jaxmodels.svf`, keyed by a Qwen2 / Llama CausalLM's Hugging Face names such as
"model.layers.0.mlp.gate_proj.weight") patches the language model's matrices: W' = U diag(S sigmoid(z)) V^T
* (sum S / sum(S sigmoid(z))), composed in float64 (`interop.svf_torch.svf_compose`). The patched matrices are
computed when the expert is loaded and kept in memory (one copy of the selected matrices per expert); a request
swaps them into the parameters' storage and back (no copy, no SVD per request). LoRA adapters stay composable:
peft wraps an adapted Linear as `<name>.base_layer`, and the expert patches that base weight, under the adapter.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from jaxmodels_interop.svf_torch import patched_weights

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ExpertBank:
    """Named SVF experts for one torch model (the whole Qwen2.5-VL model; only its language model is patched)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._patched: dict[str, dict[str, torch.Tensor]] = {}  # expert -> {parameter name: W'}
        self._paths: dict[str, str] = {}
        self.current: str | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self._patched)

    def _params(self) -> dict[str, torch.nn.Parameter]:
        """The model's parameters under their names without peft's `.base_layer` (LoRA weights left out)."""
        return {n.replace(".base_layer.", "."): p for n, p in self.model.named_parameters() if ".lora_" not in n}

    def check(self, name: str) -> None:
        if name not in self._patched:
            raise KeyError(f"no SVF expert named {name!r}; loaded experts: {self.names or 'none'} "
                           "(load one with load_expert(path, name))")

    def load(self, path: str | os.PathLike, name: str) -> dict[str, int]:
        """Reads the expert at `path` and precomputes its matrices; refuses one made for another model.
        Returns {"matrices": count, "z": total z values}."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"SVF expert name {name!r}: expected letters, digits, '_', '-' or '.'")
        if name in self._patched:
            raise ValueError(f"an SVF expert named {name!r} is already loaded (from {self._paths[name]}); "
                             "delete_expert it first or choose another name")
        if self.current is not None:
            raise RuntimeError(f"expert {self.current!r} is applied; load experts between requests")
        patched = dict(patched_weights(self._params(), path, target=type(self.model).__name__))
        self._patched[name] = patched
        self._paths[name] = os.fspath(path)
        return {"matrices": len(patched), "z": sum(min(w.shape) for w in patched.values())}

    def delete(self, name: str) -> None:
        self.check(name)
        if self.current == name:
            raise RuntimeError(f"expert {name!r} is applied right now; delete it between requests")
        del self._patched[name], self._paths[name]

    @contextlib.contextmanager
    def active(self, name: str | None):
        """Within the block the model runs with expert `name` (None: the base weights); restored after."""
        if name is None:
            yield
            return
        self.check(name)
        params = self._params()
        originals = {t: params[t].data for t in self._patched[name]}
        for t, w in self._patched[name].items():
            params[t].data = w
        self.current = name
        try:
            yield
        finally:
            for t, w in originals.items():
                params[t].data = w
            self.current = None
