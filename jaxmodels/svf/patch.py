"""Pure, jit-able patching: a model's parameter state with selected kernels replaced by W'(mask).

These functions take and return pytrees only, so they run inside `jax.jit` and `jax.grad` flows from the
loss through W' to z (the fix for the prototype, whose z never received a gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.svf.component import SvdComponent, mask_from_z
from jaxmodels.svf.decompose import Decomposition


def masks_from_z(z: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{key: z [R]} -> {key: sigmoid(z) [R]}."""
    return {k: mask_from_z(v) for k, v in z.items()}


def mix_masks(alphas: jax.Array, expert_z: list[dict[str, jax.Array]], keys: list[str]) -> dict[str, jax.Array]:
    """Few-shot mixing: m_l = sum_k alpha[k, l] * sigmoid(z_{k,l}) for alphas [K, L] (or [K, 1], broadcast).

    The official code mixes the raw z without a sigmoid although its experts were trained through one; we
    mix the masks each expert was trained with (see docs/svf.md).
    """
    alphas = jnp.asarray(alphas)
    if alphas.ndim != 2 or alphas.shape[0] != len(expert_z) or alphas.shape[1] not in (1, len(keys)):
        raise ValueError(f"mixing coefficients must have shape [K={len(expert_z)}, L={len(keys)} or 1], "
                         f"got {tuple(alphas.shape)}")
    out = {}
    for l, key in enumerate(keys):
        col = alphas[:, l if alphas.shape[1] > 1 else 0]  # [K]
        out[key] = sum(col[k] * mask_from_z(z[key]) for k, z in enumerate(expert_z))
    return out


def patch_state(params: nnx.State, components: dict[str, SvdComponent], masks: dict[str, jax.Array],
                kernel_shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> nnx.State:
    """params with each selected kernel replaced by compose(mask) reshaped to its kernel shape.

    kernel_shapes: ((key, kernel shape), ...), hashable so that it can be a static jit argument.
    """
    shapes = dict(kernel_shapes)
    missing = sorted(set(components) - set(masks))
    if missing:
        raise ValueError(f"no mask for the selected matrices {missing[:5]}")
    flat = []
    for path, var in nnx.to_flat_state(params):
        key = ".".join(str(p) for p in path)
        if key in components:
            w = components[key].compose(masks[key]).reshape(shapes[key]).astype(var.dtype)
            var = var.replace(w)
        flat.append((path, var))
    return nnx.from_flat_state(flat)


def kernel_shapes(decomposition: Decomposition) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((m.key, m.kernel_shape) for m in decomposition.matrices)
