"""The jitted steps of `training.lm`: token-weighted causal-LM loss, gradient accumulation, full or LoRA.

A step's batch holds `accum` micro-batches ([accum, B, T] per field). Each micro-batch gives the sum of its
token losses and its token count; a `lax.scan` adds the gradients of the sums, and the step divides by the
total count. So accum N x batch B computes the loss (and gradient) of the N*B rows as one batch: every
assistant token weighs the same, however the tokens fall into micro-batches (averaging per-micro-batch means,
as optax.MultiSteps does, would not).

Full fine-tuning differentiates all parameters. LoRA differentiates the adapters only: the base parameters
enter as a non-donated argument (never as constants baked into the program), and `jaxmodels.lora.apply` folds
the adapters into them inside the loss, so neither gradients nor optimizer state exist for the base.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxmodels import lora, sharding
from jaxmodels_training.lm_data import IGNORE, Rows
from jaxmodels_training.step import cast_floats

FIELDS = ("input_ids", "labels", "attention_mask")


def token_loss(model: nnx.Module, batch: dict[str, jax.Array], key) -> tuple[jax.Array, jax.Array]:
    """(sum of next-token cross-entropies over the counted labels, their count) for a batch of [B, T] fields."""
    logits = model(batch["input_ids"], "lm", attention_mask=batch["attention_mask"], dropout_key=key).logits
    logits = logits[:, :-1].astype(jnp.float32)  # [B, T-1, V]: position t predicts label t + 1
    labels = batch["labels"][:, 1:]
    valid = labels != IGNORE
    picked = jnp.take_along_axis(logits, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid, dtype=jnp.int32)


def _params_fn(graphdef, compute_dtype, lora_scale: float | None) -> Callable:
    """(trainable, frozen) -> the model to run: the parameters, or the base with the adapters folded in."""
    def model(trainable, frozen):
        if compute_dtype is not None:
            trainable = cast_floats(trainable, compute_dtype)
            frozen = None if frozen is None else cast_floats(frozen, compute_dtype)
        params = trainable if lora_scale is None else lora.apply(frozen, trainable, lora_scale)
        return nnx.merge(graphdef, params)

    return model


def make_train_step(graphdef, tx: optax.GradientTransformation, *, accum: int, lora_scale: float | None = None,
                    compute_dtype=None, out_shardings=None):
    """step(trainable, opt_state, batch, key, frozen) -> (trainable, opt_state, metrics), jitted; trainable and
    opt_state donated. `trainable` is the model's Params (full) or the adapters (lora_scale set, with the base
    Params as `frozen`; None otherwise). metrics: loss (token mean), grad_norm, tokens (counted labels)."""
    build = _params_fn(graphdef, compute_dtype, lora_scale)

    def micro(trainable, frozen, batch, key):
        return token_loss(build(trainable, frozen), batch, key)

    grad_fn = jax.value_and_grad(micro, has_aux=True)

    def step(trainable, opt_state, batch, key, frozen):
        if accum == 1:
            (total, count), grads = grad_fn(trainable, frozen, jax.tree.map(lambda x: x[0], batch), key)
        else:
            def body(carry, xs):
                mb, i = xs
                (s, n), g = grad_fn(trainable, frozen, mb, jax.random.fold_in(key, i))
                return jax.tree.map(jnp.add, carry, (g, s, n)), None

            zeros = (jax.tree.map(jnp.zeros_like, trainable), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
            (grads, total, count), _ = jax.lax.scan(body, zeros, (batch, jnp.arange(accum)))
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, {"loss": total / denom, "grad_norm": optax.global_norm(grads), "tokens": count}

    kw = {} if out_shardings is None else {"out_shardings": out_shardings}
    return jax.jit(step, donate_argnums=(0, 1), **kw)


def make_eval_step(graphdef, *, lora_scale: float | None = None, compute_dtype=None):
    """eval(trainable, batch [1, B, T] fields, frozen) -> (loss sum, count), jitted."""
    build = _params_fn(graphdef, compute_dtype, lora_scale)

    def evaluate(trainable, batch, frozen):
        return token_loss(build(trainable, frozen), jax.tree.map(lambda x: x[0], batch), None)

    return jax.jit(evaluate)


class BatchPlacer:
    """Row indices [accum, B] -> the step's batch {field: [accum, B, T] int32}, on the devices.

    With a mesh the rows are split over its batch axes (dimension 1), and each process fetches only the rows
    of the shards its own devices hold (one fetch per distinct shard), so no host ever builds the global batch.
    """

    def __init__(self, mesh, rules=sharding.DEFAULT_RULES):
        self.mesh = mesh
        self.sharding = None if mesh is None else NamedSharding(mesh, P(None, *sharding.batch_spec(2, rules)))

    def __call__(self, rows: Rows, index: np.ndarray) -> dict[str, jax.Array]:
        if self.mesh is None:
            return {k: jnp.asarray(v) for k, v in rows.take(index).items()}
        shape = (*index.shape, rows.input_ids.shape[1])
        per_device = self.sharding.addressable_devices_indices_map(shape)
        fetched: dict[tuple, dict[str, np.ndarray]] = {}
        pieces = {k: [] for k in FIELDS}
        for device, where in per_device.items():
            key = tuple((s.start, s.stop) for s in where)
            if key not in fetched:
                fetched[key] = {k: v[..., where[2]] for k, v in rows.take(index[where[0], where[1]]).items()}
            for k in FIELDS:
                pieces[k].append(jax.device_put(fetched[key][k], device))
        return {k: jax.make_array_from_single_device_arrays(shape, self.sharding, pieces[k]) for k in FIELDS}
