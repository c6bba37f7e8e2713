"""Data parallel + FSDP over a `jax.sharding.Mesh` with axes ("data", "fsdp").

The batch is split over both axes; each parameter (and its optimizer state) is split along its largest
dimension divisible by the fsdp size and replicated over "data".
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")


def parse_mesh(spec: str | None) -> dict[str, int] | None:
    """"data=2,fsdp=2" -> {"data": 2, "fsdp": 2}; None or "" -> None (one device, no mesh)."""
    if not spec:
        return None
    sizes = {"data": 1, "fsdp": 1}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in AXES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--mesh {spec!r}: expected comma-separated axis=size with axes {AXES}, e.g. data=2,fsdp=2")
        sizes[name] = int(value)
    return sizes


def make_mesh(sizes: dict[str, int]) -> Mesh:
    need = math.prod(sizes.values())
    devices = jax.devices()
    if need != len(devices):
        raise ValueError(f"--mesh {sizes} needs {need} devices, found {len(devices)} "
                         f"(on the CPU: XLA_FLAGS=--xla_force_host_platform_device_count={need})")
    return Mesh(np.asarray(devices).reshape(sizes["data"], sizes["fsdp"]), AXES)


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Shards the largest dimension divisible by fsdp; replicates when none is."""
    if fsdp > 1:
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % fsdp == 0:
                return P(*[("fsdp" if a == axis else None) for a in range(len(shape))])
    return P()


def shard_tree(tree, mesh: Mesh):
    """Places every array of `tree` on the mesh with `param_spec`."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, param_spec(x.shape, fsdp))), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXES))
