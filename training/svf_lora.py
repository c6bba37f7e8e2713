"""The LoRA baseline of the Transformer² comparison: the same RL objective, rollouts and optimizer as an SVF
expert, with LoRA adapters on the same matrices in place of z.

`LoRAPolicy(model, rank=...)` plugs into `SVFPPOTrainer(None, codec, policy=...)`; theta holds the adapters
(A [I, r] random, B [r, O] zero, so training starts at the base model; `jaxmodels.lora`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels import lora
from jaxmodels_training.svf_rl import Policy

MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")  # the matrices SVF's default pattern selects


class LoRAPolicy(Policy):
    """theta = the LoRA adapters' arrays as a list (lora_A / lora_B of every targeted Linear, in the order of
    their nnx.State, orbax- and optax-friendly like SVF's z list) over a frozen model."""

    def __init__(self, model: nnx.Module, *, rank: int = 8, alpha: float | None = None,
                 targets: tuple[str, ...] = MLP_TARGETS, seed: int = 0):
        self.model = model
        self.config = lora.LoraConfig(rank=rank, alpha=float(2 * rank if alpha is None else alpha),
                                      targets=targets, model_type=getattr(model.config, "model_type", None))
        initial = lora.init(model, self.config, key=jax.random.key(seed))
        self._initial, self._treedef = jax.tree.flatten(initial)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        super().__init__(graphdef, rest, (params,))

    def adapters(self, theta: list[jax.Array]) -> nnx.State:
        return jax.tree.unflatten(self._treedef, list(theta))

    def params_for(self, theta, frozen) -> nnx.State:
        return lora.apply(frozen[0], self.adapters(theta), self.config.scale)

    def theta0(self) -> list[jax.Array]:
        return [jnp.array(x, copy=True) for x in self._initial]  # copies: updates donate theta

    def patched(self, theta):
        return self.model if theta is None else lora.merge(self.model, self.adapters(theta), self.config)

    def save(self, path, theta) -> object:
        """The adapters as a jaxmodels LoRA directory (lora.json + lora.safetensors; `jaxmodels.lora.load`)."""
        return lora.save(path, self.adapters(theta), self.config)
