"""Pure, jit-able patching: a model's parameter state with selected kernels replaced by W'(mask).

These functions take and return pytrees only, so they run inside `jax.jit` and `jax.grad` flows from the
loss through W' to z (the fix for the prototype, whose z never received a gradient).

Few-shot mixing (`mix_masks`) indexes its coefficients alphas [K, L] by `official_matrix_order`: layer-major,
each layer's matrices in Hugging Face state-dict order (q, k, v, o, then gate, up, down), the layout of the
official `WeightedCombination.adaptive_weights`, so one alphas array means the same mixture in both codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.svf.component import SvdComponent, mask_from_z
from jaxmodels.svf.decompose import Decomposition, MatrixInfo

MIXES = ("sigmoid", "raw")
# A layer's projections in the order Hugging Face's Llama / Qwen2 modules define them (so their state dicts
# list them): self_attn q, k, v, o, then mlp gate, up, down. Our own models (Hyformer) use the same names.
HF_MATRIX_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def masks_from_z(z: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{key: z [R]} -> {key: sigmoid(z) [R]}."""
    return {k: mask_from_z(v) for k, v in z.items()}


def _state_dict_position(info: MatrixInfo) -> tuple[float, int]:
    """(layer index, position of the projection in HF_MATRIX_ORDER) from the Hugging Face name."""
    parts = info.hf_name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), math.inf)  # not in a layer (lm_head): after the layers
    name = parts[-2] if len(parts) >= 2 else parts[-1]
    return layer, HF_MATRIX_ORDER.index(name) if name in HF_MATRIX_ORDER else len(HF_MATRIX_ORDER)


def official_matrix_order(decomposition: Decomposition | Sequence[MatrixInfo]) -> list[str]:
    """Our keys in the official mixing order: by layer, then gate, up, down (q, k, v, o first) as in the HF
    state dict; names outside HF_MATRIX_ORDER keep their model order after the known ones of their layer.

    `Decomposition.keys` (and so expert files, `SVFWrapper.keys`) is model order, alphabetical within a layer
    (down, gate, up): column l of a mixing array is `official_matrix_order(...)[l]`, not `keys[l]`.
    """
    matrices = decomposition.matrices if isinstance(decomposition, Decomposition) else tuple(decomposition)
    order = sorted(range(len(matrices)), key=lambda i: (*_state_dict_position(matrices[i]), i))
    return [matrices[i].key for i in order]


def _permute_columns(alphas, src: list[str], dst: list[str]) -> np.ndarray:
    a = np.asarray(alphas)
    if a.ndim != 2 or a.shape[1] not in (1, len(src)):
        raise ValueError(f"mixing coefficients must have shape [K, L={len(src)} or 1], got {tuple(a.shape)}")
    if a.shape[1] == 1:  # one coefficient per expert for every matrix: the same in any order
        return a.copy()
    where = {k: i for i, k in enumerate(src)}
    return a[:, [where[k] for k in dst]]


def alphas_to_official(alphas, decomposition: Decomposition) -> np.ndarray:
    """alphas [K, L] whose columns follow `decomposition.keys` (model order) -> the official order."""
    return _permute_columns(alphas, decomposition.keys, official_matrix_order(decomposition))


def alphas_from_official(alphas, decomposition: Decomposition) -> np.ndarray:
    """alphas [K, L] in the official order (what `mix_masks` / `SVFWrapper.patch_mixture` take) -> columns
    following `decomposition.keys`."""
    return _permute_columns(alphas, official_matrix_order(decomposition), decomposition.keys)


def mix_masks(alphas: jax.Array, expert_z: list[dict[str, jax.Array]], keys: list[str], *,
              mix: str = "sigmoid") -> dict[str, jax.Array]:
    """Few-shot mixing of K experts with alphas [K, L] (or [K, 1], one coefficient per expert for every matrix);
    column l mixes matrix keys[l] (`SVFWrapper.patch_mixture` passes `official_matrix_order`).

    mix="sigmoid" (default): m_l = sum_k alpha[k, l] * sigmoid(z_{k,l}), the masks the experts were trained with.
    mix="raw": m_l = sum_k alpha[k, l] * z_{k,l}, the official `WeightedCombination` (raw z used as the mask).
    A raw mask can have sum(S * m) <= 0, which `SvdComponent.compose` treats as nothing to rescale (the base
    weights): pass raw masks through `orient_masks` before `patch_state` to get the official W'.
    """
    if mix not in MIXES:
        raise ValueError(f"unknown few-shot mixing {mix!r}; expected one of {MIXES}")
    alphas = jnp.asarray(alphas)
    if alphas.ndim != 2 or alphas.shape[0] != len(expert_z) or alphas.shape[1] not in (1, len(keys)):
        raise ValueError(f"mixing coefficients must have shape [K={len(expert_z)}, L={len(keys)} or 1], "
                         f"got {tuple(alphas.shape)}")
    to_mask = mask_from_z if mix == "sigmoid" else (lambda v: v)
    out = {}
    for l, key in enumerate(keys):
        col = alphas[:, l if alphas.shape[1] > 1 else 0]  # [K]
        out[key] = sum(col[k] * to_mask(z[key]) for k, z in enumerate(expert_z))
    return out


def orient_masks(masks: dict[str, jax.Array], components: dict[str, SvdComponent]) -> dict[str, jax.Array]:
    """m * sign(sum(S * m)) for each mask: the same W' (U diag(S m) V^T * sum S / sum(S m) does not change when
    m is multiplied by any c != 0), now with the positive sum(S * m) that `SvdComponent.compose` needs to apply
    the formula to a raw mixture. A mask with sum(S * m) = 0 stays as it is, so compose gives the base weights
    (where the official formula divides by zero)."""
    out = {}
    for key, m in masks.items():
        total = jnp.sum(components[key].s * m.astype(components[key].s.dtype))
        out[key] = jnp.where(total < 0, -m, m)
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
