"""The PyTorch twin of our Flax V.V.A.L.T: a transformers PreTrainedConfig / PreTrainedModel pair.

Self-contained (torch, transformers and numpy only) so that an export can ship this file as
`modeling_vvalt.py` and load with `trust_remote_code=True` where jaxmodels is not installed. Same math,
batched, differentiable; every weight is registered under the original HF wrapper's flat names
(`encoder_W_semantic`, ...) plus the ones it left out (`attention_W_output`, `projector_W_topology`, biases).
Letters: B batch, I input, T task, F frame, H hidden, K = 5 frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as fn
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel
from transformers.utils import ModelOutput

try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers 4.x, for an exported directory loaded elsewhere with trust_remote_code
    from transformers import PretrainedConfig as PreTrainedConfig

FRAME_NAMES = ("semantic", "structural", "causal", "relational", "graph")


class VVALTConfig(PreTrainedConfig):
    """The seed's fields; hidden_dim None means 2 * frame_dim."""

    model_type = "vvalt"

    def __init__(self, input_dim=768, frame_dim=512, task_dim=64, hidden_dim=None, num_labels=None, seed=42,
                 initializer_range=0.02, safe_bounds=(-10.0, 10.0), graph_propagation=True, **kwargs):
        self.input_dim, self.frame_dim, self.task_dim, self.hidden_dim = input_dim, frame_dim, task_dim, hidden_dim
        self.seed, self.initializer_range = seed, initializer_range
        self.safe_bounds = [float(safe_bounds[0]), float(safe_bounds[1])]
        self.graph_propagation = bool(graph_propagation)
        if num_labels is not None:  # else transformers' default (2) or the stored id2label decide
            kwargs["num_labels"] = num_labels
        super().__init__(**kwargs)

    @property
    def resolved_hidden_dim(self) -> int:
        return self.hidden_dim or 2 * self.frame_dim


def body_shapes(config: VVALTConfig) -> dict[str, tuple[int, ...]]:
    """Every body parameter name and shape (W [in, out], as the original computes x @ W + b)."""
    i, f, t, h = config.input_dim, config.frame_dim, config.task_dim, config.resolved_hidden_dim
    shapes = {}
    for name in FRAME_NAMES:
        shapes[f"encoder_W_{name}"], shapes[f"encoder_b_{name}"] = (i, f), (f,)
    shapes.update(selector_W_task=(t, 5), selector_b_task=(5,), projector_W_topology=(f, f))
    for name in ("query", "key", "value", "output"):
        shapes[f"attention_W_{name}"] = (f, f)
    shapes.update(attention_b_output=(f,), refiner_W1=(f, h), refiner_b1=(h,), refiner_W2=(h, f), refiner_b2=(f,))
    return shapes


def original_body_weights(config: VVALTConfig) -> dict[str, np.ndarray]:
    """The original NumPy core's float64 weights for config.seed: one fresh legacy RNG per component
    (the original reseeded the global one in each constructor), reduced QR for the encoder."""
    i, f, t, h, seed = (config.input_dim, config.frame_dim, config.task_dim, config.resolved_hidden_dim,
                        config.seed)
    w = {}
    rng = np.random.RandomState(seed)
    for name in FRAME_NAMES:
        m = rng.randn(i, f)
        w[f"encoder_W_{name}"] = np.linalg.qr(m)[0] if i >= f else np.linalg.qr(m.T)[0].T
    rng = np.random.RandomState(seed)
    w["selector_W_task"] = rng.randn(t, 5) * 0.1
    rng = np.random.RandomState(seed)
    w["projector_W_topology"] = np.eye(f) + rng.randn(f, f) * 0.01
    rng = np.random.RandomState(seed)
    for name in ("query", "key", "value", "output"):
        w[f"attention_W_{name}"] = rng.randn(f, f) * 0.1
    rng = np.random.RandomState(seed)
    w["refiner_W1"] = rng.randn(f, h) * math.sqrt(2.0 / f)
    w["refiner_W2"] = rng.randn(h, f) * math.sqrt(2.0 / h)
    return {k: w.get(k, np.zeros(s)) for k, s in body_shapes(config).items()}


@dataclass
class VVALTOutput(ModelOutput):
    """As the Flax VVALTOutput: last_hidden_state [B, F] (heads: the logits [B, L], as the seed reads them)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    final_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    sanitized: torch.Tensor | None = None


class VVALTPreTrainedModel(PreTrainedModel):
    config_class = VVALTConfig
    base_model_prefix = "vvalt"
    main_input_name = "inputs_embeds"

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, VVALTModel):
            for name, value in original_body_weights(module.config).items():
                getattr(module, name).copy_(torch.from_numpy(value))
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, self.config.initializer_range)
            if module.bias is not None:
                module.bias.zero_()


def _propagate(z: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """z [B, ..., F] times adj^T, adj [F, F] or [B, F, F]."""
    if adj.dim() == 2:
        return z @ adj.T
    return torch.einsum("b...f,bgf->b...g", z, adj)


class VVALTModel(VVALTPreTrainedModel):
    """The body: model(inputs_embeds [B, I], task_vector [B, T] or [T], graph_adj None | [F, F] | [B, F, F])."""

    def __init__(self, config: VVALTConfig):
        super().__init__(config)
        for name, shape in body_shapes(config).items():
            setattr(self, name, nn.Parameter(torch.empty(shape)))
        self.post_init()

    def _check(self, x, t, adj):
        c, where = self.config, type(self).__name__
        if x is None:
            raise ValueError(f"{where}: inputs_embeds is required, of shape [B, input_dim={c.input_dim}]")
        if x.dim() != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"{where}: inputs_embeds has shape {tuple(x.shape)}, expected [B, input_dim={c.input_dim}]")
        if t is None:
            raise ValueError(f"{where}: task_vector is required (V.V.A.L.T is task-conditioned); pass a tensor of "
                             f"shape [B={x.shape[0]}, task_dim={c.task_dim}] or [task_dim={c.task_dim}]")
        if t.dim() == 1 and t.shape[0] == c.task_dim:
            t = t.expand(x.shape[0], c.task_dim)
        if tuple(t.shape) != (x.shape[0], c.task_dim):
            raise ValueError(f"{where}: task_vector has shape {tuple(t.shape)}, expected [B={x.shape[0]}, "
                             f"task_dim={c.task_dim}] or [task_dim={c.task_dim}]")
        f = c.frame_dim
        if adj is not None and tuple(adj.shape) not in ((f, f), (x.shape[0], f, f)):
            raise ValueError(f"{where}: graph_adj has shape {tuple(adj.shape)}, expected [{f}, {f}] or "
                             f"[B={x.shape[0]}, {f}, {f}]")
        dtype = self.encoder_W_semantic.dtype
        return x.to(dtype), t.to(dtype), None if adj is None else adj.to(dtype)

    def run(self, x, t, adj):
        """Validated x [B, I], t [B, T], adj -> (final [B, F], (frames, weighted, projected) [B, K, F] each,
        attention [B, K, K], sanitized [B])."""
        z = {n: x @ getattr(self, f"encoder_W_{n}") + getattr(self, f"encoder_b_{n}") for n in FRAME_NAMES}
        f = self.config.frame_dim
        half = f // 2
        zs = z["structural"]
        structural = [torch.sin(zs[:, :half]), torch.cos(zs[:, half:2 * half])] + ([zs[:, -1:]] if f % 2 else [])
        graph = z["graph"]
        if adj is not None:
            graph = _propagate(graph, adj / (adj.sum(-1, keepdim=True) + 1e-8))
        zc, zr = z["causal"], z["relational"]
        frames = torch.stack([
            torch.tanh(z["semantic"]), torch.cat(structural, dim=-1),
            torch.tanh(torch.cat([zc[:, :1], zc[:, 1:] - zc[:, :-1]], dim=-1)),
            zr / (torch.linalg.vector_norm(zr, dim=-1, keepdim=True) + 1e-8), torch.tanh(graph)], dim=1)
        weights = torch.softmax(t @ self.selector_W_task + self.selector_b_task, dim=-1)  # [B, K]
        weighted = frames * weights[:, :, None]
        smoothed = weighted
        if adj is not None and self.config.graph_propagation:
            a = adj + torch.eye(f, dtype=adj.dtype, device=adj.device)
            deg = a.sum(-1)
            inv = torch.where(deg > 0, torch.rsqrt(torch.where(deg > 0, deg, torch.ones_like(deg))),
                              torch.zeros_like(deg))
            smoothed = _propagate(weighted, inv[..., :, None] * a * inv[..., None, :])
        s = smoothed @ self.projector_W_topology  # [B, K, F]
        q, k = s @ self.attention_W_query, s @ self.attention_W_key
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(f), dim=-1)  # [B, K, K]
        pooled = torch.einsum("bk,bkf->bf", attn.mean(dim=1), s)  # mean-pooling commutes with the value map
        o = pooled @ self.attention_W_value @ self.attention_W_output + self.attention_b_output
        h = torch.tanh(o @ self.refiner_W1 + self.refiner_b1)
        r = torch.tanh(h @ self.refiner_W2 + self.refiner_b2)
        y = torch.clamp(0.5 * torch.tanh(o) + 0.5 * r, -1.0, 1.0)
        low, high = self.config.safe_bounds
        sanitized = ~torch.isfinite(y).all(dim=-1)
        final = torch.clamp(torch.nan_to_num(y, nan=0.0, posinf=high, neginf=low), low, high)
        return final, (frames, weighted, s), attn, sanitized

    def forward(self, inputs_embeds=None, task_vector=None, graph_adj=None, labels=None, return_dict=None, **kwargs):
        if labels is not None:
            raise ValueError("VVALTModel has no head: labels need VVALTForSequenceClassification or VVALTForRegression")
        final, frames, attn, sanitized = self.run(*self._check(inputs_embeds, task_vector, graph_adj))
        return VVALTOutput(last_hidden_state=final, final_output=final, hidden_states=frames, attentions=(attn,),
                           sanitized=sanitized)


class _VVALTWithHead(VVALTPreTrainedModel):
    head_name = "classifier"

    def __init__(self, config: VVALTConfig):
        super().__init__(config)
        self.vvalt = VVALTModel(config)
        setattr(self, self.head_name, nn.Linear(config.frame_dim, config.num_labels))
        self.post_init()

    def forward(self, inputs_embeds=None, task_vector=None, graph_adj=None, labels=None, return_dict=None, **kwargs):
        final, frames, attn, sanitized = self.vvalt.run(*self.vvalt._check(inputs_embeds, task_vector, graph_adj))
        logits = getattr(self, self.head_name)(final)
        loss = None if labels is None else self._loss(logits, labels)
        return VVALTOutput(loss=loss, logits=logits, last_hidden_state=logits, final_output=final,
                           hidden_states=frames, attentions=(attn,), sanitized=sanitized)


class VVALTForSequenceClassification(_VVALTWithHead):
    """Body + classifier; labels: class ids [B] (int), -100 ignored."""

    head_name = "classifier"

    def _loss(self, logits, labels):
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"VVALTForSequenceClassification: labels must be integer class ids, got {labels.dtype}")
        if tuple(labels.shape) != (logits.shape[0],):
            raise ValueError(f"VVALTForSequenceClassification: labels have shape {tuple(labels.shape)}, "
                             f"expected [B={logits.shape[0]}]")
        bad = labels[(labels != -100) & ((labels < 0) | (labels >= self.config.num_labels))]
        if bad.numel():
            raise ValueError(f"VVALTForSequenceClassification: labels contain class ids {sorted(set(bad.tolist()))} "
                             f"outside [0, num_labels={self.config.num_labels})")
        return fn.cross_entropy(logits.float(), labels.long(), ignore_index=-100)


class VVALTForRegression(_VVALTWithHead):
    """Body + regressor; labels: real targets [B, L] (or [B] when L == 1), loss MSE."""

    head_name = "regressor"

    def _loss(self, logits, labels):
        n = self.config.num_labels
        if not labels.is_floating_point():
            raise TypeError(f"VVALTForRegression: labels must be floating point, got {labels.dtype}")
        if tuple(labels.shape) not in ((logits.shape[0], n),) + (((logits.shape[0],),) if n == 1 else ()):
            raise ValueError(f"VVALTForRegression: labels have shape {tuple(labels.shape)}, expected "
                             f"[B={logits.shape[0]}, num_labels={n}]")
        return fn.mse_loss(logits, labels.reshape(logits.shape).to(logits.dtype))


AutoConfig.register("vvalt", VVALTConfig, exist_ok=True)
AutoModel.register(VVALTConfig, VVALTModel, exist_ok=True)
AutoModelForSequenceClassification.register(VVALTConfig, VVALTForSequenceClassification, exist_ok=True)
