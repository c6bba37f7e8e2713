"""Jitted forward for tests: eager NNX calls dispatch op by op and are slow on a shared CPU."""

from functools import partial

import jax
import numpy as np
from flax import nnx


@partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, ids):
    return nnx.merge(graphdef, state)(ids).logits


def logits(model, ids) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, np.asarray(ids, np.int32)))
