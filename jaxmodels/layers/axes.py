"""Logical axes: every parameter names what each of its dimensions is, and `jaxmodels.sharding` maps the
names onto a device mesh with a rule set.

The names (a parameter's dimensions, in order, are one of these or None):

| name | what the dimension indexes | e.g. |
|---|---|---|
| vocab | tokens | embedding [vocab, embed], an untied LM head |
| embed | the model width D | every projection's input or output |
| heads | query heads N | q_proj [embed, heads, head_dim], o_proj [heads, head_dim, embed] |
| kv_heads | key/value heads K | k_proj, v_proj [embed, kv_heads, head_dim] |
| head_dim | the head width H | |
| mlp | the MLP's hidden width F | gate/up [embed, mlp], down [mlp, embed] |
| norm | a normalisation's weight or bias | RMSNorm [norm] |
| labels | a classification head's outputs | Hyformer's prediction head [embed, labels] |

The names are stored as Flax NNX's `out_sharding` metadata of each `nnx.Param` (so `nnx.get_partition_spec`
and Flax's logical-axis-rule context read them too), with Flax's eager sharding off: a parameter is placed on
devices only when `jaxmodels.sharding` places it, never as a side effect of building a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

LOGICAL_AXES = ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm", "labels")


def param(value: jax.Array, axes: Sequence[str | None]) -> nnx.Param:
    """An nnx.Param holding `value`, whose dimensions are named by `axes` (one entry per dimension)."""
    axes = tuple(axes)
    if len(axes) != value.ndim:
        raise ValueError(f"logical axes {axes} name {len(axes)} dimensions; the parameter has shape "
                         f"{tuple(value.shape)}")
    unknown = [a for a in axes if a is not None and a not in LOGICAL_AXES]
    if unknown:
        raise ValueError(f"unknown logical axes {unknown}; known: {', '.join(LOGICAL_AXES)}")
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def axes_of(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axes a parameter was created with, or None (an unnamed parameter)."""
    names = variable.get_metadata().get("out_sharding")
    return None if names is None else tuple(names)
