"""Device meshes and the rules that place parameters, optimizer state and batches on them.

A mesh has the axes `MESH_AXES` = ("data", "fsdp", "tensor"): "data" replicates the model and splits the
batch, "fsdp" splits the batch and also the parameters (each device holds a slice, gathered when used),
"tensor" splits heads and MLP units (tensor parallelism), the batch staying whole along it.
A rule set maps each logical axis of a parameter (`jaxmodels.layers.axes`) to a mesh axis, a tuple of mesh
axes, or None (replicated); `DEFAULT_RULES` is the usual FSDP + tensor-parallel layout of a decoder:

    vocab -> tensor, embed -> fsdp, heads/kv_heads/mlp -> tensor, head_dim/norm/labels -> replicated,
    batch -> (data, fsdp)

A mesh axis is used at most once per parameter (the first dimension that asks for it gets it), and mesh
axes of size 1 are left out of the specs, so one device and any mesh give the same programs' results.
A dimension that a mesh axis of size > 1 does not divide is refused, naming the parameter, the dimension
and the axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmodels.layers.axes import LOGICAL_AXES, axes_of

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("labels", None),
)


class ShardingError(ValueError):
    """A mesh or rule set that does not fit the model or the devices (a user error)."""


def parse_mesh(spec: str | None) -> dict[str, int] | None:
    """"data=2,tensor=2" -> {"data": 2, "fsdp": 1, "tensor": 2}; None or "" -> None (one device, no mesh)."""
    if not spec:
        return None
    sizes = dict.fromkeys(MESH_AXES, 1)
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if name not in MESH_AXES or not value.isdigit() or int(value) < 1:
            raise ShardingError(f"--mesh {spec!r}: expected comma-separated axis=size with axes "
                                f"{', '.join(MESH_AXES)} and sizes >= 1, e.g. data=2,fsdp=2")
        sizes[name] = int(value)
    return sizes


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh of axes MESH_AXES (sizes default to 1) over `devices` (default: all devices of all processes)."""
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
        raise ShardingError(f"unknown mesh axes {unknown}; the axes are {', '.join(MESH_AXES)}")
    shape = tuple(int(sizes.get(a, 1)) for a in MESH_AXES)
    devices = list(jax.devices() if devices is None else devices)
    if math.prod(shape) != len(devices):
        described = ",".join(f"{a}={n}" for a, n in zip(MESH_AXES, shape))
        raise ShardingError(f"mesh {described} needs {math.prod(shape)} devices, found {len(devices)} "
                            f"(on the CPU: XLA_FLAGS=--xla_force_host_platform_device_count={math.prod(shape)})")
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def check_rules(rules: Rules) -> dict[str, tuple[str, ...]]:
    """{logical axis: mesh axes} from a rule list; refuses unknown names and a logical axis given twice."""
    table: dict[str, tuple[str, ...]] = {}
    for logical, target in rules:
        if logical != "batch" and logical not in LOGICAL_AXES:
            raise ShardingError(f"rule for unknown logical axis {logical!r}; known: batch, {', '.join(LOGICAL_AXES)}")
        if logical in table:
            raise ShardingError(f"logical axis {logical!r} has two rules")
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        bad = [t for t in targets if t not in MESH_AXES]
        if bad:
            raise ShardingError(f"rule {logical!r} -> {target!r}: unknown mesh axes {bad}; the axes are "
                                f"{', '.join(MESH_AXES)}")
        table[logical] = targets
    return table


def logical_spec(axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                 rules: Rules = DEFAULT_RULES, *, name: str = "array") -> P:
    """The PartitionSpec of an array of `shape` whose dimensions are named `axes` (None: replicated)."""
    if axes is None:
        return P()
    table, used, spec = check_rules(rules), set(), []
    for dim, (logical, size) in enumerate(zip(axes, shape)):
        targets = tuple(t for t in table.get(logical, ()) if t not in used and mesh.shape[t] > 1) if logical else ()
        ways = math.prod(mesh.shape[t] for t in targets)
        if size % ways:
            split = " x ".join(f"{t}={mesh.shape[t]}" for t in targets)
            raise ShardingError(f"{name}: dimension {dim} ({logical}, size {size}) is not divisible by mesh axis "
                                f"{split}; choose a mesh that divides it or a rule that maps {logical!r} elsewhere")
        used.update(targets)
        spec.append(None if not targets else targets[0] if len(targets) == 1 else targets)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def _key(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def state_specs(state: nnx.State, mesh, rules: Rules = DEFAULT_RULES):
    """A tree like `state` (an nnx.State of Variables, e.g. `nnx.state(model)`, abstract or not) with a
    PartitionSpec per Variable from its logical axes; unnamed ones (and non-parameter state) are replicated.
    `mesh` only needs a `shape` ({axis: size}): a Mesh or a jax.sharding.AbstractMesh."""
    def one(path, var):
        if not isinstance(var, nnx.Variable):
            return P()
        return var.replace(logical_spec(axes_of(var), var.shape, mesh, rules, name=_key(path)))

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """`state_specs` as NamedShardings on `mesh` (a tree like `state`, for jit's in/out_shardings)."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), state_specs(state, mesh, rules),
                        is_leaf=lambda x: isinstance(x, P))


def shard_state(state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.State:
    """`state` with every array placed on its sharding (a new State; the Variables keep their metadata)."""
    shardings = state_shardings(state, mesh, rules)
    return jax.tree.map(lambda v, s: v.replace(jax.device_put(v.get_value(), s.get_value())), state, shardings,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.Module:
    """Places every parameter of `model` on the mesh, in place; returns the model."""
    nnx.update(model, shard_state(nnx.state(model), mesh, rules))
    return model


def batch_spec(ndim: int, rules: Rules = DEFAULT_RULES) -> P:
    """The spec of a batch-major array of `ndim` dimensions: the batch over the "batch" rule's axes."""
    targets = check_rules(rules).get("batch", ())
    return P(targets if len(targets) != 1 else targets[0], *([None] * (ndim - 1))) if targets else P()


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, batch_spec(ndim, rules))


def _batch_ways(mesh: Mesh, rules: Rules) -> int:
    """How many ways the mesh splits a batch: the product of the batch rule's axis sizes."""
    return math.prod(mesh.shape[t] for t in check_rules(rules).get("batch", ()))


def check_batch(batch_size: int, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> None:
    """Refuses a batch size that the batch axes of the mesh do not divide."""
    ways = _batch_ways(mesh, rules)
    if batch_size % ways:
        raise ShardingError(f"batch size {batch_size} is not divisible by the mesh's batch axes "
                            f"({ways} ways: data x fsdp); choose a multiple of {ways}")


def optimizer_shardings(tx, opt_state, params_shardings, mesh: Mesh):
    """Shardings for the optax state `opt_state` of `tx`: a leaf that stands for a parameter (Adam's moments,
    found by optax.tree_map_params) takes that parameter's sharding from `params_shardings` (a tree like
    the parameters); the rest (step counts, scalars) is replicated."""
    import optax

    replicated = NamedSharding(mesh, P())
    return optax.tree_map_params(tx, lambda _, sharding: sharding, opt_state, params_shardings,
                                 transform_non_params=lambda _: replicated)


def mesh_of(tree) -> Mesh | None:
    """The mesh the arrays of `tree` are placed on, if any array spans several devices; else None."""
    for leaf in jax.tree.leaves(tree):
        s = getattr(leaf, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh.size > 1:
            return s.mesh
    return None


def place_batch(x, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """A host batch [B, ...] split over the mesh's batch axes, or replicated when they do not divide B."""
    ways = _batch_ways(mesh, rules)
    spec = batch_spec(x.ndim, rules) if x.shape[0] % ways == 0 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))


def placer(mesh: Mesh | None, rules: Rules = DEFAULT_RULES):
    """`place(key, var, array) -> jax.Array` for loaders: `array` (host, already in its final dtype) on the
    sharding that abstract parameter `var`'s logical axes give it, each device receiving only its slice
    (jax.make_array_from_callback, so with several processes each one places just its own devices' slices);
    mesh None: onto the default device."""
    if mesh is None:
        return lambda key, var, array: jnp.asarray(array)

    def place(key, var, array):
        target = NamedSharding(mesh, logical_spec(axes_of(var), array.shape, mesh, rules, name=key))
        return jax.make_array_from_callback(array.shape, target, lambda index: array[index])

    return place
