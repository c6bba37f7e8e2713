"""One jitted training step over split/merge NNX state: forward, backward, optax update, donated state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def cast_floats(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, loss_fn: LossFn, *,
                    compute_dtype=None, out_shardings=None):
    """Returns step(params, opt_state, batch, key) -> (params, opt_state, metrics), jitted, state donated.

    `loss_fn(model, batch, key) -> (loss, aux)`. With compute_dtype (e.g. bfloat16) the forward and
    backward run in that dtype while params and optimizer state stay float32 (master weights).
    """

    def step(params, opt_state, batch, key):
        def objective(p):
            if compute_dtype is not None:
                p = cast_floats(p, compute_dtype)
            return loss_fn(nnx.merge(graphdef, p), batch, key)

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss.astype(jnp.float32), "grad_norm": optax.global_norm(grads), **aux}

    kw = {} if out_shardings is None else {"out_shardings": out_shardings}
    return jax.jit(step, donate_argnums=(0, 1), **kw)


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: LossFn, *, compute_dtype=None):
    """Returns eval(params, batch, key) -> loss, jitted."""

    def evaluate(params, batch, key):
        if compute_dtype is not None:
            params = cast_floats(params, compute_dtype)
        return loss_fn(nnx.merge(graphdef, params), batch, key)[0].astype(jnp.float32)

    return jax.jit(evaluate)
