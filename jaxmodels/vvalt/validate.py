"""Input checks for the V.V.A.L.T forward pass: precise errors before anything is traced.

Shape and dtype checks run on concrete arrays and on tracers alike; checks on label values run only when the
labels are concrete (outside a user's jit), because a traced value cannot be inspected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels.losses import IGNORE_INDEX
from jaxmodels.vvalt.config import VVALTConfig


def _as_array(value, name: str, where: str) -> jax.Array | np.ndarray:
    if isinstance(value, jax.Array):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as e:  # noqa: BLE001 - any conversion failure becomes the same clear error
            raise TypeError(f"{where}: {name} must be an array, got {type(value).__name__} ({e})") from None
    if arr.dtype == bool or not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{where}: {name} must hold real numbers (float or int), got dtype {arr.dtype}")
    return arr


def check_inputs(config: VVALTConfig, inputs_embeds, task_vector, graph_adj, dtype, where: str):
    """Returns (x [B, I], t [B, T], adj None | [F, F] | [B, F, F]) cast to `dtype`, or raises.

    task_vector may be [T] (one task for the whole batch) or [B, T]. NaN/inf values are allowed: the verifier
    sanitises the output and the trace counts them.
    """
    if inputs_embeds is None:
        raise ValueError(f"{where}: inputs_embeds is required, of shape [B, input_dim={config.input_dim}]")
    x = _as_array(inputs_embeds, "inputs_embeds", where)
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        hint = "; add a batch axis (x[None])" if x.ndim == 1 and x.shape[0] == config.input_dim else ""
        raise ValueError(f"{where}: inputs_embeds has shape {tuple(x.shape)}, expected [B, input_dim="
                         f"{config.input_dim}]{hint}")
    b = x.shape[0]
    if b == 0:
        raise ValueError(f"{where}: inputs_embeds has an empty batch (shape {tuple(x.shape)}); expected B >= 1")
    if task_vector is None:
        raise ValueError(f"{where}: task_vector is required (V.V.A.L.T is task-conditioned); pass an array of shape "
                         f"[B={b}, task_dim={config.task_dim}] or [task_dim={config.task_dim}]")
    t = _as_array(task_vector, "task_vector", where)
    if t.ndim == 1 and t.shape[0] == config.task_dim:
        t = jnp.broadcast_to(jnp.asarray(t, dtype), (b, config.task_dim))
    elif t.ndim != 2 or t.shape != (b, config.task_dim):
        raise ValueError(f"{where}: task_vector has shape {tuple(t.shape)}, expected [B={b}, task_dim="
                         f"{config.task_dim}] or [task_dim={config.task_dim}]")
    adj = None
    if graph_adj is not None:
        adj = _as_array(graph_adj, "graph_adj", where)
        f = config.frame_dim
        if adj.shape not in ((f, f), (b, f, f)):
            raise ValueError(f"{where}: graph_adj has shape {tuple(adj.shape)}, expected [frame_dim, frame_dim] = "
                             f"[{f}, {f}] (one graph over the frame coordinates) or [B={b}, {f}, {f}]")
        adj = jnp.asarray(adj, dtype)
    return jnp.asarray(x, dtype), jnp.asarray(t, dtype), adj


def _concrete(a) -> np.ndarray | None:
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_class_labels(labels, batch: int, num_labels: int, where: str) -> jax.Array:
    """Class ids [B] of an integer dtype in [0, num_labels) (or -100: ignored)."""
    y = _as_array(labels, "labels", where) if not isinstance(labels, jax.Array) else labels
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"{where}: classification labels must be integer class ids, got dtype {y.dtype}; "
                        f"for real-valued targets use VVALTForRegression")
    if y.shape != (batch,):
        raise ValueError(f"{where}: labels have shape {tuple(y.shape)}, expected [B={batch}] class ids")
    values = _concrete(y)
    if values is not None:
        bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_labels))]
        if bad.size:
            raise ValueError(f"{where}: labels contain class ids {sorted(set(bad.tolist()))[:10]} outside "
                             f"[0, num_labels={num_labels}) (use {IGNORE_INDEX} to ignore a sample); "
                             f"does config.num_labels match your data?")
    return jnp.asarray(y, jnp.int32)


def check_regression_labels(labels, batch: int, num_labels: int, dtype, where: str) -> jax.Array:
    """Real targets [B, L] (or [B] when L == 1) of a floating dtype; returned as [B, L]."""
    y = _as_array(labels, "labels", where) if not isinstance(labels, jax.Array) else labels
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(f"{where}: regression labels must be floating point, got dtype {y.dtype}; "
                        f"for class ids use VVALTForSequenceClassification")
    ok = y.shape == (batch, num_labels) or (num_labels == 1 and y.shape == (batch,))
    if not ok:
        expected = f"[B={batch}, num_labels={num_labels}]" + (f" or [B={batch}]" if num_labels == 1 else "")
        raise ValueError(f"{where}: labels have shape {tuple(y.shape)}, expected {expected}; "
                         f"does config.num_labels match your data?")
    return jnp.asarray(y, dtype).reshape(batch, num_labels)
