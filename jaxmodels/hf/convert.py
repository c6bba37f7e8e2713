"""Plans that map a checkpoint's tensors onto a model's parameters (and back) through a key table.

A plan is made from shapes alone (the checkpoint header and an abstract model from `nnx.eval_shape`),
checks every shape, and collects every problem: a parameter left unfilled, a stored tensor left unused,
a tied copy that differs. Loading then reads one tensor at a time; export streams through the writer.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.hf.source import FLOAT_DTYPES, CheckpointError, SafetensorsCheckpoint  # every parameter is a float
from jaxmodels.hf.tables import KeyTable


def param_key(path) -> str:
    return ".".join(str(p) for p in path)


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """{our key: shape} for every nnx.Param (works on abstract models from nnx.eval_shape)."""
    return {param_key(p): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@dataclasses.dataclass(frozen=True)
class Step:
    ours: str
    stored: str
    transform: object | None  # None: same key layout as ours
    our_shape: tuple[int, ...]

    def load(self, ckpt: SafetensorsCheckpoint) -> np.ndarray:
        array = ckpt.get(self.stored)
        return array if self.transform is None else self.transform.to_ours(array, self.our_shape)

    def stored_shape(self) -> tuple[int, ...]:
        return self.our_shape if self.transform is None else self.transform.hf_shape(self.our_shape)


def plan_import(shapes: dict[str, tuple[int, ...]], ckpt: SafetensorsCheckpoint, table: KeyTable | None, *,
                tied: dict[str, str] | None = None) -> list[Step]:
    """One Step per parameter; raises CheckpointError listing every problem at once.

    table None: the checkpoint uses our keys and layouts. `tied` maps stored keys that are copies of
    another stored tensor (e.g. "lm_head.weight" -> "model.embed_tokens.weight"); a copy must be equal.
    """
    tied = tied or {}
    steps, problems, seen = {}, [], set()
    for key in ckpt.keys():
        if key in tied:
            src = tied[key]
            if src not in ckpt:
                problems.append(f"tensor {key!r} is tied to {src!r}, which is missing")
            elif ckpt.shape(key) != ckpt.shape(src) or not np.array_equal(ckpt.get(key), ckpt.get(src)):
                problems.append(f"tensor {key!r} is tied to {src!r} but holds different values")
            continue
        mapped = (key, None) if table is None else table.to_ours(key)
        if mapped is None or mapped[0] not in shapes:
            where = "" if mapped is None else f" (maps to {mapped[0]!r}, which this configuration does not have)"
            problems.append(f"unexpected tensor {key!r}{where}")
            continue
        step = Step(mapped[0], key, mapped[1], shapes[mapped[0]])
        seen.add(step.ours)
        if ckpt.dtype(key) not in FLOAT_DTYPES:
            problems.append(f"tensor {key!r} has dtype {ckpt.dtype(key)}, expected a floating-point dtype "
                            f"({', '.join(FLOAT_DTYPES)})")
            continue
        if ckpt.shape(key) != step.stored_shape():
            problems.append(f"tensor {key!r} has shape {ckpt.shape(key)}, expected {step.stored_shape()}")
            continue
        steps[step.ours] = step
    for ours, shape in sorted(shapes.items()):
        if ours not in seen:
            problems.append(f"missing tensor {stored_key(ours, table)!r} (expected shape {shape})")
    if problems:
        raise CheckpointError(f"{ckpt.directory}: {len(problems)} problem(s) with the weights:\n  "
                              + "\n  ".join(problems))
    return [steps[k] for k in sorted(steps)]


def stored_key(ours: str, table: KeyTable | None) -> str:
    if table is None:
        return ours
    mapped = table.to_hf(ours)
    if mapped is None:
        raise ValueError(f"parameter {ours!r} has no entry in the {table.name} key table")
    return mapped[0]


def fill(abstract: nnx.Module, ckpt: SafetensorsCheckpoint, table: KeyTable | None, *, tied=None,
         dtype=None, place=None) -> nnx.Module:
    """Returns the abstract model with every parameter read from ckpt, one tensor at a time: each is read,
    cast to `dtype` (default: the parameter's) on the host and handed to `place(key, var, array)` (default:
    onto the default device; `jaxmodels.sharding.placer` for a mesh) before the next one is read."""
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    plan = {s.ours: s for s in plan_import(param_shapes(abstract), ckpt, table, tied=tied)}
    place = place or (lambda key, var, array: jnp.asarray(array))
    filled = []
    for path, var in nnx.to_flat_state(params):
        key = param_key(path)
        array = np.asarray(plan[key].load(ckpt)).astype(dtype or var.dtype, copy=False)
        filled.append((path, var.replace(place(key, var, array))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled), rest)
