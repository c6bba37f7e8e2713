"""VVALTModel and its classification / regression heads, Flax NNX, batched and jitted.

`VVALTConfig(seed=s)` gives exactly the original NumPy core's weights for seed s (see init.py); every weight,
biases included, is an `nnx.Param`, so the whole model trains. A call validates its inputs on the host and
runs one jitted function (split/merge + `jax.jit`) over the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels import checkpoint, losses
from jaxmodels.layers.linear import Linear
from jaxmodels.pretrained import Pretrained
from jaxmodels.vvalt import validate
from jaxmodels.vvalt.config import VVALTConfig
from jaxmodels.vvalt.init import original_weights
from jaxmodels.vvalt.layers import FrameAttention, FrameEncoder, LogicRefiner, TopologyProjector, VantageSelector, verify
from jaxmodels.vvalt.trace import VVALTTrace, build_trace

_DTYPES = (jnp.float32, jnp.float64)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VVALTOutput:
    """What every V.V.A.L.T model returns.

    last_hidden_state: [B, F] for VVALTModel; for the heads the logits [B, L], as the seed's examples read them.
    logits: [B, L] (heads only). loss: scalar when labels were given (heads only).
    final_output: [B, F], the verified body output, in every model.
    hidden_states: the frames (encoded, task-weighted, topology-projected), each [B, 5, F].
    attentions: (the frame attention [B, 5, 5],), row q attends to column k.
    sanitized: [B] bool, True where the verifier replaced NaN/inf values.
    trace: a VVALTTrace when return_trace=True.
    """

    last_hidden_state: jax.Array
    logits: jax.Array | None = None
    loss: jax.Array | None = None
    final_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
    sanitized: jax.Array | None = None
    trace: VVALTTrace | None = None


def check_dtype(dtype) -> Any:
    dtype = jnp.dtype(dtype)
    if dtype not in [jnp.dtype(d) for d in _DTYPES]:
        raise ValueError(f"V.V.A.L.T parameters must be float32 or float64, got {dtype}")
    return dtype


def x64_scope(dtype) -> contextlib.AbstractContextManager:
    """jax x64 switched on for the duration of a float64 model's work, and left alone otherwise."""
    return jax.enable_x64(True) if jnp.dtype(dtype) == jnp.float64 else contextlib.nullcontext()


@functools.partial(jax.jit, static_argnames=("graphdef", "return_trace"))
def _apply(state, x, t, adj, labels, *, graphdef, return_trace: bool):
    return nnx.merge(graphdef, state).forward(x, t, adj, labels, return_trace=return_trace)


class _VVALTBase(Pretrained, nnx.Module):
    """Validation, jitted dispatch and explain(), shared by the model and its heads; checkpoints (ours or the
    twin's, dtype float32 or float64) through `Pretrained`."""

    config: VVALTConfig

    @property
    def dtype(self):
        """The parameter dtype (float32 or float64)."""
        return self._body().encoder.W_semantic[...].dtype

    def _body(self) -> VVALTModel:
        """The VVALTModel inside (the heads keep it as `vvalt`)."""
        return getattr(self, "vvalt", self)

    def _labels(self, labels, batch: int):
        raise ValueError(f"{type(self).__name__} has no head: labels need VVALTForSequenceClassification or "
                         f"VVALTForRegression")

    def __call__(self, inputs_embeds=None, task_vector=None, graph_adj=None, labels=None, *,
                 return_trace: bool = False) -> VVALTOutput:
        """inputs_embeds [B, I]; task_vector [B, T] or [T]; graph_adj None, [F, F] or [B, F, F]; labels per head.

        graph_adj is an adjacency over the F frame coordinates: the graph frame is propagated by its
        row-normalised form (as the original), and, when config.graph_propagation, every task-weighted frame is
        smoothed by D^-1/2 (A + I) D^-1/2 before the topology projection.
        """
        where = type(self).__name__
        dtype = self.dtype
        with x64_scope(dtype):
            x, t, adj = validate.check_inputs(self.config, inputs_embeds, task_vector, graph_adj, dtype, where)
            y = None if labels is None else self._labels(labels, x.shape[0])
            graphdef, state = nnx.split(self)
            return _apply(state, x, t, adj, y, graphdef=graphdef, return_trace=bool(return_trace))

    def explain(self, inputs_embeds, task_vector, graph_adj=None, index: int | None = None) -> str:
        """Runs with the trace and returns its text summary (sample `index`, or all samples)."""
        out = self(inputs_embeds, task_vector, graph_adj, return_trace=True)
        return out.trace.explain(index)


class VVALTModel(_VVALTBase):
    """The V.V.A.L.T body: encoder -> selector -> projector -> frame attention -> refiner -> verifier.

    `model(x [B, I], task_vector [B, T]) -> VVALTOutput` with last_hidden_state [B, F] in [-1, 1].
    """

    def __init__(self, config: VVALTConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        del rngs  # the body's weights come from config.seed through the original's NumPy procedure
        dtype = check_dtype(param_dtype)
        self.config = config
        w = original_weights(config)
        with x64_scope(dtype):
            self.encoder = FrameEncoder(w, dtype)
            self.selector = VantageSelector(w, dtype)
            self.projector = TopologyProjector(w, dtype)
            self.attention = FrameAttention(w, dtype)
            self.refiner = LogicRefiner(w, dtype)

    def run(self, x: jax.Array, t: jax.Array, adj: jax.Array | None, *, return_trace: bool) -> dict[str, Any]:
        """The batched math on validated arrays: x [B, I], t [B, T], adj None | [F, F] | [B, F, F]."""
        frames = self.encoder(x, adj)  # [B, K, F]
        weights = self.selector(t)  # [B, K]
        weighted = frames * weights[:, :, None]  # [B, K, F]
        projected = self.projector(weighted, adj if self.config.graph_propagation else None)  # [B, K, F]
        attention_output, attn = self.attention(projected)  # [B, F], [B, K, K]
        refined = self.refiner(attention_output)  # [B, F]
        final, nonfinite = verify(refined, self.config.safe_bounds)  # [B, F], [B]
        out = {"final": final, "frames": (frames, weighted, projected), "attention": attn, "sanitized": nonfinite > 0}
        if return_trace:
            out["trace"] = VVALTTrace(build_trace(
                x=x, t=t, frames=frames, weighted=weighted, task_weights=weights, attention=attn,
                attention_output=attention_output, refined=refined, final=final, nonfinite=nonfinite),
                input_dim=self.config.input_dim, frame_dim=self.config.frame_dim)
        return out

    def forward(self, x, t, adj, labels=None, *, return_trace: bool = False) -> VVALTOutput:
        del labels  # __call__ refuses labels for the body
        r = self.run(x, t, adj, return_trace=return_trace)
        return VVALTOutput(last_hidden_state=r["final"], final_output=r["final"], hidden_states=r["frames"],
                           attentions=(r["attention"],), sanitized=r["sanitized"], trace=r.get("trace"))


class _VVALTWithHead(_VVALTBase):
    """The body plus one Linear(F, L) head, initialised N(0, initializer_range) with zero bias.

    Subclasses name the head (`head_name`) and define `_labels` (checks) and `_loss(logits [B, L], labels)`.
    """

    head_name: str

    def __init__(self, config: VVALTConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        dtype = check_dtype(param_dtype)
        self.config = config
        self.vvalt = VVALTModel(config, param_dtype=dtype)
        with x64_scope(dtype):
            head = Linear(config.frame_dim, config.num_labels, use_bias=True, param_dtype=dtype,
                          init_std=config.initializer_range, rngs=rngs or nnx.Rngs(config.seed))
        setattr(self, self.head_name, head)

    def forward(self, x, t, adj, labels=None, *, return_trace: bool = False) -> VVALTOutput:
        r = self.vvalt.run(x, t, adj, return_trace=return_trace)
        logits = getattr(self, self.head_name)(r["final"])  # [B, L]
        loss = None if labels is None else self._loss(logits, labels)
        return VVALTOutput(last_hidden_state=logits, logits=logits, loss=loss, final_output=r["final"],
                           hidden_states=r["frames"], attentions=(r["attention"],), sanitized=r["sanitized"],
                           trace=r.get("trace"))


class VVALTForSequenceClassification(_VVALTWithHead):
    """Body + `classifier`; labels are class ids [B] (-100 ignored), loss the mean cross-entropy."""

    head_name = "classifier"

    def _labels(self, labels, batch: int):
        return validate.check_class_labels(labels, batch, self.config.num_labels, type(self).__name__)

    def _loss(self, logits, labels):
        return losses.token_cross_entropy(logits, labels)


class VVALTForRegression(_VVALTWithHead):
    """Body + `regressor`; labels are real targets [B, L] (or [B] when L == 1), loss the mean squared error."""

    head_name = "regressor"

    def _labels(self, labels, batch: int):
        return validate.check_regression_labels(labels, batch, self.config.num_labels, self.dtype,
                                                type(self).__name__)

    def _loss(self, logits, labels):
        return jnp.mean(jnp.square(logits - labels.astype(logits.dtype)))


MODEL_CLASSES = {"base": VVALTModel, "classification": VVALTForSequenceClassification,
                 "regression": VVALTForRegression}


def to_numpy_weights(model: _VVALTBase) -> dict[str, np.ndarray]:
    """Every parameter as a NumPy array keyed by its path (`encoder.W_semantic`, `classifier.kernel`, ...)."""
    return {k: np.asarray(jax.device_get(v)) for k, v in checkpoint.flat_params(model).items()}
