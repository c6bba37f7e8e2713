"""SVFWrapper: a frozen base model, its decomposition, and z-vectors; patched models on demand."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.svf import expert as expert_io
from jaxmodels.svf.decompose import DEFAULT_PATTERN, Decomposition, decompose
from jaxmodels.svf.patch import (kernel_shapes, masks_from_z, mix_masks, official_matrix_order, orient_masks,
                                 patch_state)

INIT_VALUE, INIT_STD = 0.1, 0.01  # the official policy's init: z = 0.1 + 0.01 * N(0, 1)


def init_z(decomposition: Decomposition, *, seed: int = 0, init_value: float = INIT_VALUE,
           init_std: float = INIT_STD) -> dict[str, jax.Array]:
    """{key: z [R]}, near-uniform so that W'(z) starts within ~1% of W (the rescale absorbs the 0.1)."""
    keys = jax.random.split(jax.random.key(seed), len(decomposition.matrices))
    return {m.key: init_value + init_std * jax.random.normal(k, (m.rank,), jnp.float32)
            for m, k in zip(decomposition.matrices, keys)}


class SVFWrapper:
    """`SVFWrapper(model)`: decompose (default: every MLP matrix), hold z-vectors, patch on demand.

    The base model is never modified. `patch_weights(z)` returns a new model with W'(z);
    `patched_params(params, z)` is the pure form used inside jitted training steps.
    """

    def __init__(self, model: nnx.Module, *, pattern: str = DEFAULT_PATTERN, cache_dir: str | os.PathLike | None = None,
                 decomposition: Decomposition | None = None, seed: int = 0, init_value: float = INIT_VALUE,
                 init_std: float = INIT_STD):
        self.model = model
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.decomposition = decomposition if decomposition is not None else decompose(model, pattern,
                                                                                       cache_dir=cache_dir)
        self.components = self.decomposition.components
        self.kernel_shapes = kernel_shapes(self.decomposition)
        self.z_vectors = init_z(self.decomposition, seed=seed, init_value=init_value, init_std=init_std)

    @property
    def keys(self) -> list[str]:
        return self.decomposition.keys

    @property
    def num_z(self) -> int:
        return self.decomposition.num_z

    def patched_params(self, params: nnx.State, masks: dict[str, jax.Array]) -> nnx.State:
        """Pure: params with W'(masks) in place of the selected kernels (call inside jit / grad)."""
        return patch_state(params, self.components, masks, self.kernel_shapes)

    def merge(self, params: nnx.State) -> nnx.Module:
        return nnx.merge(self.graphdef, params, self.rest)

    def patch_weights(self, z: dict[str, jax.Array] | None = None) -> nnx.Module:
        """A new model with W' = U diag(S sigmoid(z)) V^T * (sum S / sum(S sigmoid(z))); default: self.z_vectors."""
        z = self.z_vectors if z is None else self.check_z(z)
        return self.merge(_patch_jit(self.params, self.components, masks_from_z(z), self.kernel_shapes))

    def patch_mixture(self, alphas, experts: list[dict[str, jax.Array]], *, mix: str = "sigmoid") -> nnx.Module:
        """A new model with the few-shot mixture of K experts, alphas [K, L] (or [K, 1]).

        Column l is matrix `official_matrix_order(self.decomposition)[l]` (by layer, then gate, up, down: the
        official layout; `alphas_from_official` / `alphas_to_official` convert from / to `self.keys` order).
        mix="sigmoid": m = sum_k alphas[k, l] sigmoid(z_k); mix="raw": m = sum_k alphas[k, l] z_k, the official
        W' for any sign of sum(S m). A matrix whose mixture has sum(S m) = 0 (e.g. its alphas all 0) keeps its
        base weights in both modes (the official formula divides by zero there).
        """
        masks = mix_masks(alphas, [self.check_z(z) for z in experts], official_matrix_order(self.decomposition),
                          mix=mix)
        if mix == "raw":
            masks = orient_masks(masks, self.components)
        return self.merge(_patch_jit(self.params, self.components, masks, self.kernel_shapes))

    def check_z(self, z: dict[str, jax.Array]) -> dict[str, jax.Array]:
        missing, extra = sorted(set(self.keys) - set(z)), sorted(set(z) - set(self.keys))
        bad = [f"{m.key}: {tuple(np.shape(z[m.key]))} != ({m.rank},)" for m in self.decomposition.matrices
               if m.key in z and tuple(np.shape(z[m.key])) != (m.rank,)]
        if missing or extra or bad:
            raise ValueError(f"z-vectors do not fit this decomposition: missing {missing[:5]}, unexpected "
                             f"{extra[:5]}, wrong shapes {bad[:5]}")
        return {k: jnp.asarray(z[k], jnp.float32) for k in self.keys}

    def save(self, path: str | os.PathLike, z: dict[str, jax.Array] | None = None, *, name: str | None = None):
        """Writes z (default self.z_vectors) as an expert keyed by Hugging Face parameter names."""
        return expert_io.save_expert(path, self.decomposition, self.z_vectors if z is None else self.check_z(z),
                                     name=name)

    def load(self, path: str | os.PathLike, *, set_current: bool = True) -> dict[str, jax.Array]:
        """Reads an expert made for this model (refuses another model's); optionally makes it current."""
        z = expert_io.load_expert(path, self.decomposition)
        if set_current:
            self.z_vectors = z
        return z


def save_z_checkpoint(wrapper: SVFWrapper, path: str | os.PathLike, *, name: str | None = None):
    """The seed's name for `wrapper.save(path)`: safetensors, not a pickle."""
    return wrapper.save(path, name=name)


def load_z_checkpoint(wrapper: SVFWrapper, path: str | os.PathLike) -> dict[str, jax.Array]:
    return wrapper.load(path)


_patch_jit = jax.jit(patch_state, static_argnums=(3,))
