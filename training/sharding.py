"""The trainers' side of `jaxmodels.sharding`: a mesh from `--mesh`, parameters and optimizer state placed
by the logical-axis rules, the step's output shardings, and batches split over the batch axes.

Any mix of data, FSDP and tensor parallelism: `--mesh data=2,fsdp=2`, `--mesh tensor=4`, ... (axes
jaxmodels.sharding.MESH_AXES). Without `--mesh` everything stays on the default device.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxmodels import sharding
from jaxmodels.sharding import DEFAULT_RULES, Rules


@dataclasses.dataclass
class Placement:
    """Where a trainer's arrays live: `mesh` None means one device."""

    mesh: Mesh | None
    rules: Rules = DEFAULT_RULES

    @classmethod
    def from_args(cls, mesh: str | None, batch_size: int, rules: Rules = DEFAULT_RULES) -> Placement:
        """From a `--mesh` value; refuses a batch size the batch axes do not divide."""
        sizes = sharding.parse_mesh(mesh)
        if sizes is None:
            return cls(None, rules)
        placed = cls(sharding.make_mesh(sizes), rules)
        sharding.check_batch(batch_size, placed.mesh, rules)
        return placed

    def params(self, params):
        """An nnx.State of parameters, placed on the mesh by their logical axes."""
        return params if self.mesh is None else sharding.shard_state(params, self.mesh, self.rules)

    def init_optimizer(self, tx, params):
        """(tx.init(params) placed like the parameters, the train step's out_shardings or None)."""
        if self.mesh is None:
            return jax.jit(tx.init)(params), None
        param_sh = sharding.state_shardings(params, self.mesh, self.rules)
        abstract = jax.eval_shape(tx.init, params)
        opt_sh = sharding.optimizer_shardings(tx, abstract, param_sh, self.mesh)
        opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
        return opt_state, (param_sh, opt_sh, None)

    def batch(self, x):
        """A host batch [B, ...] -> a device array, split over the batch axes of the mesh."""
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, sharding.batch_sharding(self.mesh, x.ndim, self.rules))
