"""The PyTorch Hyformer twin: the original's module tree (commit af5f42d) with our Flax model's fixed masks.

Self-contained (torch, transformers and the standard library only): exports ship this file with
`configuration_hyformer.py` and load with `trust_remote_code=True` where jaxmodels is not installed.
Needs transformers >= 5 (tied weights are declared as a `{target: source}` dict).

Module names give exactly the original's state-dict keys: `embed.weight`, `blocks.{i}.input_norm.weight`,
`blocks.{i}.attn.{q,k,v,o}_proj.weight`, `blocks.{i}.post_attn_norm.weight`,
`blocks.{i}.mlp.{gate,up,down}_proj.{weight,bias}`, `final_norm.{weight,bias}`, `heads.{lm,mlm}.weight`
(the embedding itself) and optionally `heads.prediction.{norm,classifier}.{weight,bias}`.
The math is jaxmodels' Hyformer: RoPE positions count real tokens, padding keys are masked (True = attend),
a query with nothing to attend to averages all values uniformly, and the causal mask follows the cache.
Letters: B batch, T new tokens, P cached tokens, S = P + T keys, D width, N heads, H head dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as fn
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from .configuration_hyformer import HyformerConfig

if int(transformers.__version__.split(".")[0]) < 5:
    raise ImportError(f"the Hyformer modeling code needs transformers >= 5, found {transformers.__version__}")

TASKS = ("lm", "mlm", "prediction")
IGNORE_INDEX = -100
INIT_STD = 0.02
MLP_RATIO = 4
ROPE_THETA = 10000.0
PREDICTION_NORM_EPS = 1e-5
# Arguments transformers passes generically that change nothing here when falsy / are implied by the mask.
_INERT_KWARGS = ("output_attentions", "output_hidden_states")
_IGNORED_KWARGS = ("cache_position",)


# transformers 5.24 renamed the cache of model outputs and of forward() from `past_key_values` to `cache` (the old
# name still reads and passes through); the output's field takes the installed version's name.
CACHE_FIELD = "cache" if hasattr(ModelOutput, "_replace_old_cache_name") else "past_key_values"


def _output_class(cache_field: str) -> type:
    """The Hyformer's ModelOutput dataclass, its cache field named `cache_field`."""
    fields = {"loss": "torch.Tensor | None", "logits": "torch.Tensor | None", cache_field: "Any",
              "extras": "dict[str, Any] | None"}
    namespace = {"__module__": __name__, "__qualname__": "HyformerOutput", "__annotations__": fields,
                 **dict.fromkeys(fields), "__doc__": (
                     f"logits [B, T, V] (or [B, L] for `prediction`); loss a scalar when labels were given; "
                     f"{cache_field} the cache to pass back (when caching); extras: \"hidden_states\" [B, T, D] "
                     f"after the final norm and \"kv_caches\".")}
    return dataclass(type("HyformerOutput", (ModelOutput,), namespace))


HyformerOutput = _output_class(CACHE_FIELD)


class KVCache:
    """One layer's cache, as the entries of the seed's `kv_caches` list: keys and values [B, N, S, H]
    (head-major) and key_mask [B, S] (True = a real token; left padding stays masked while decoding)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor):
        self.k, self.v, self.key_mask = k, v, key_mask

    @property
    def length(self) -> int:
        return self.k.shape[2]


class HyformerRMSNorm(nn.Module):
    """w * x / sqrt(mean(x^2) + eps), normalised in float32 and scaled in the input dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)


class HyformerLayerNorm(nn.LayerNorm):
    """torch.nn.LayerNorm (weight and bias) computed in float32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fn.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                             self.eps).to(x.dtype)


def rope_angles(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, T, 1, H/2] in float32, for theta^(-2i/H)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    angles = positions.float()[..., None] * (1.0 / ROPE_THETA ** exponents)  # [B, T, H/2]
    return torch.cos(angles)[:, :, None, :], torch.sin(angles)[:, :, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the interleaved pairs (x[2i], x[2i+1]) of x [B, T, N, H] (GPT-J style); returns x's dtype."""
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *, is_causal: bool,
           dropout_p: float) -> torch.Tensor:
    """q [B, N, T, H], k and v [B, N, S, H] -> [B, N, T, H] with scale 1/sqrt(H).

    mask [B, T, S] bool (True = attend), or None for all keys (is_causal: the causal triangle, T == S).
    A query row with nothing to attend to averages all values uniformly, as the Flax model does, instead
    of the NaN SDPA gives: its row is opened and its query zeroed, so every score is equal.
    """
    if mask is not None:
        empty = ~mask.any(dim=-1)  # [B, T]
        if bool(empty.any()):
            mask = mask | empty[..., None]
            q = q.masked_fill(empty[:, None, :, None], 0.0)
        mask = mask[:, None]  # [B, 1, T, S]
    return fn.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                           is_causal=is_causal and mask is None)


class HyformerAttention(nn.Module):
    """q/k/v/o projections Linear(D, D, bias=False); RoPE on q and k; keys and values through the cache."""

    def __init__(self, config: HyformerConfig):
        super().__init__()
        d = config.d_model
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.dropout = config.attn_dropout

    def forward(self, x, cos, sin, mask, is_causal, kv_update=None):
        """x [B, T, D] -> [B, T, D]; kv_update maps the new k, v [B, N, T, H] to all keys/values [B, N, S, H]."""
        b, t, _ = x.shape
        shape = (b, t, self.n_heads, self.head_dim)
        q = apply_rope(self.q_proj(x).view(shape), cos, sin).transpose(1, 2)  # [B, N, T, H]
        k = apply_rope(self.k_proj(x).view(shape), cos, sin).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if kv_update is not None:
            k, v = kv_update(k, v)
        out = attend(q, k, v, mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class HyformerMLP(nn.Module):
    """SwiGLU down(silu(gate(x)) * up(x)) with biases, hidden width 4 * D."""

    def __init__(self, config: HyformerConfig):
        super().__init__()
        d, f = config.d_model, MLP_RATIO * config.d_model
        self.gate_proj = nn.Linear(d, f)
        self.up_proj = nn.Linear(d, f)
        self.down_proj = nn.Linear(f, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(fn.silu(self.gate_proj(x)) * self.up_proj(x))


class HyformerBlock(nn.Module):
    """x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x)), with resid_dropout on both branches."""

    def __init__(self, config: HyformerConfig):
        super().__init__()
        self.input_norm = HyformerRMSNorm(config.d_model, config.eps)
        self.attn = HyformerAttention(config)
        self.post_attn_norm = HyformerRMSNorm(config.d_model, config.eps)
        self.mlp = HyformerMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x, cos, sin, mask, is_causal, kv_update=None):
        x = x + self.resid_dropout(self.attn(self.input_norm(x), cos, sin, mask, is_causal, kv_update))
        return x + self.resid_dropout(self.mlp(self.post_attn_norm(x)))


class HyformerPredictionHead(nn.Module):
    """LayerNorm(D, eps 1e-5) -> dropout -> Linear(D, L) on the first token's state [B, D] -> [B, L]."""

    def __init__(self, d_model: int, num_labels: int, dropout: float):
        super().__init__()
        self.norm = HyformerLayerNorm(d_model, eps=PREDICTION_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(pooled)))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def token_cross_entropy(logits, labels, *, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0):
    """Mean CE of logits [..., V] against labels [...] over entries != ignore_index (0 when none count).
    Label smoothing uses the target (1 - eps) * onehot + eps / V and still skips ignored entries."""
    logp = fn.log_softmax(logits.float(), dim=-1)
    valid = labels != ignore_index
    nll = -logp.gather(-1, torch.where(valid, labels, 0).long()[..., None])[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(dim=-1)
    return _masked_mean(nll, valid)


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int, *, multilabel: bool = False):
    """logits [B, L]. One output: MSE over non-NaN targets [B] or [B, 1]; multilabel: BCE-with-logits over
    non-NaN entries of [B, L]; otherwise CE over class ids [B], NaN or -1 ignored."""
    logits = logits.float()
    if logits.shape[-1] != num_labels:
        raise ValueError(f"prediction logits have {logits.shape[-1]} outputs, expected num_labels={num_labels}")
    if num_labels == 1 and not multilabel:
        y = labels.float().reshape(logits.shape[0], -1)
        if y.shape[1] != 1:
            raise ValueError(f"regression labels must have shape [B] or [B, 1], got {tuple(labels.shape)}")
        valid = ~torch.isnan(y)
        return _masked_mean((logits - torch.where(valid, y, 0.0)).square(), valid)
    if multilabel:
        y = labels.float()
        if y.shape != logits.shape:
            raise ValueError(f"multilabel labels must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        valid = ~torch.isnan(y)
        bce = fn.binary_cross_entropy_with_logits(logits, torch.where(valid, y, 0.0), reduction="none")
        return _masked_mean(bce, valid)
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"class labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
    if labels.is_floating_point():
        labels = torch.where(torch.isnan(labels), -1.0, labels).long()
    return token_cross_entropy(logits, labels, ignore_index=-1)


class HyformerPreTrainedModel(PreTrainedModel):
    config_class = HyformerConfig
    main_input_name = "input_ids"
    _no_split_modules = ["HyformerBlock"]
    _tied_weights_keys = {"heads.lm.weight": "embed.weight", "heads.mlm.weight": "embed.weight"}

    @torch.no_grad()
    def _init_weights(self, module):
        """The original's scheme: N(0, 0.02) embedding and linear weights, zero biases, unit norms."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, INIT_STD)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, HyformerRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class HyformerModel(HyformerPreTrainedModel):
    """The original `Hyformer`: embedding, blocks, final LayerNorm and every head, with the seed's call
    `model(input_ids, task="lm", attention_mask=None, kv_caches=None, use_cache=False, labels=None)`."""

    def __init__(self, config: HyformerConfig):
        super().__init__(config)
        d, v = config.d_model, config.vocab_size
        self.embed = nn.Embedding(v, d)
        self.blocks = nn.ModuleList([HyformerBlock(config) for _ in range(config.n_layers)])
        self.final_norm = HyformerLayerNorm(d, eps=config.eps)
        heads = {"lm": nn.Linear(d, v, bias=False), "mlm": nn.Linear(d, v, bias=False)}
        if config.num_prediction_tasks is not None:
            heads["prediction"] = HyformerPredictionHead(d, config.num_prediction_tasks, config.prediction_dropout)
        self.heads = nn.ModuleDict(heads)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding):
        self.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.heads["lm"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, refusing a checkpoint whose heads differ from the embedding (transformers
        only warns and leaves them untied; Hyformer's lm and mlm heads are the embedding)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path", "")
        for name in model._tied_weights_keys:
            if model.get_parameter(name) is not model.embed.weight:
                raise ValueError(f"Hyformer checkpoint {source}: {name} differs from embed.weight; the lm and mlm "
                                 f"heads are the token embedding, stored at most as copies of it")
        return loaded

    def get_num_params(self, trainable_only: bool = False) -> int:
        """Parameter count; the tied heads are the embedding, counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point() \
                or input_ids.dtype in (torch.bool, torch.complex64, torch.complex128):
            described = f"{input_ids.dtype} of shape {tuple(input_ids.shape)}" if torch.is_tensor(input_ids) \
                else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape [B, T], got {described}")
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}) (vocab_size); "
                                 f"got values from {lo} to {hi}")

    def _split_masks(self, attention_mask, cache, b: int, t: int, device):
        """-> (past key mask [B, P], new token mask [B, T]), both bool; P is the number of cached tokens.

        attention_mask is [B, T] (new tokens; the past comes from a `kv_caches` list's record, or counts as
        all real for a transformers Cache, which records none) or [B, P + T] (the transformers convention).
        """
        if isinstance(cache, Cache):
            past = cache.get_seq_length()
            recorded = None
        elif cache is not None and cache[0] is not None:
            past = cache[0].length
            recorded = cache[0].key_mask
        else:
            past, recorded = 0, None
        if attention_mask is None:
            token_mask = torch.ones(b, t, dtype=torch.bool, device=device)
            past_mask = recorded
        elif tuple(attention_mask.shape) == (b, past + t):
            mask = attention_mask.bool()
            past_mask, token_mask = mask[:, :past], mask[:, past:]
        elif tuple(attention_mask.shape) == (b, t) and (recorded is not None or past == 0):
            past_mask, token_mask = recorded, attention_mask.bool()
        else:
            options = ([f"[B={b}, T={t}]"] if past == 0 or recorded is not None else []) + \
                ([f"[B={b}, P+T={past + t}] (the cache holds P={past} tokens)"] if past else [])
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {' or '.join(options)}")
        if past_mask is None:
            past_mask = torch.ones(b, past, dtype=torch.bool, device=device)
        return past_mask, token_mask

    def hidden_states(self, input_ids: torch.Tensor, *, causal: bool, attention_mask=None, cache=None,
                      position_ids=None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """input_ids [B, T] -> (final-normed hidden states [B, T, D], new token mask [B, T], updated cache).

        cache: None, the seed's list of per-layer `KVCache` (entries None when empty; a new list is returned),
        or a transformers `Cache` (updated in place). Positions default to the count of real tokens before
        each one, continuing after the cached ones, so left padding does not shift RoPE.
        """
        self._check_input_ids(input_ids)
        b, t = input_ids.shape
        if cache is not None and not causal:
            raise ValueError("a KV cache is only used by the causal task 'lm'")
        if cache is not None and not isinstance(cache, Cache):
            cache = list(cache)
            if len(cache) != len(self.blocks):
                raise ValueError(f"kv_caches has {len(cache)} entries, expected one per layer ({len(self.blocks)})")
        past_mask, token_mask = self._split_masks(attention_mask, cache, b, t, input_ids.device)
        past = past_mask.shape[1]
        if past + t > self.config.max_seq_len:
            raise ValueError(f"sequence length {past + t} ({past} cached + {t} new) exceeds max_seq_len="
                             f"{self.config.max_seq_len}")
        if position_ids is None:
            position_ids = (token_mask.long().cumsum(dim=1) - 1).clamp(min=0) + past_mask.sum(1, keepdim=True)
        elif tuple(position_ids.shape) != (b, t):
            raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}, expected [B={b}, T={t}]")
        key_mask = torch.cat([past_mask, token_mask], dim=1)  # [B, S]
        mask, is_causal = None, False
        if past == 0 and bool(key_mask.all()):
            is_causal = causal
        elif not (bool(key_mask.all()) and (not causal or t == 1)):
            mask = key_mask[:, None, :].expand(b, t, past + t)  # [B, T, S]
            if causal:
                slots = torch.arange(past + t, device=input_ids.device)
                mask = mask & (slots[None, :] <= (past + slots[:t])[:, None])[None]
        cos, sin = rope_angles(position_ids, self.config.head_dim)

        x = self.embed(input_ids)
        new_layers = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                update = None
            elif isinstance(cache, Cache):
                def update(k, v, i=i):
                    return cache.update(k, v, i)
            else:
                def update(k, v, layer=cache[i]):
                    if layer is not None:
                        k, v = torch.cat([layer.k, k], dim=2), torch.cat([layer.v, v], dim=2)
                    new_layers.append(KVCache(k, v, key_mask))
                    return k, v
            x = block(x, cos, sin, mask, is_causal, update)
        if cache is not None and not isinstance(cache, Cache):
            cache = new_layers
        return self.final_norm(x), token_mask, cache

    def forward(self, input_ids: torch.Tensor | None = None, task: str = "lm", attention_mask=None, kv_caches=None,
                use_cache: bool = False, labels=None, past_key_values=None, position_ids=None, return_dict=None,
                cache=None, **kwargs) -> HyformerOutput:
        """input_ids [B, T]; attention_mask [B, T] (1 = token, 0 = padding) or [B, P + T] with a cache;
        labels: [B, T] token ids for lm (shifted inside) and mlm (-100 and padding ignored), class ids [B],
        targets [B] / [B, 1] or multi-label targets [B, L] for prediction.

        kv_caches (the seed's name), past_key_values and cache (transformers' before and since 5.24) all take the
        cache: the seed's list of per-layer KVCache or a transformers Cache; use_cache without one starts a list.
        """
        unknown = sorted(k for k in kwargs if k not in _INERT_KWARGS + _IGNORED_KWARGS)
        if unknown:
            raise TypeError(f"Hyformer.forward got unexpected arguments {unknown}")
        for name in _INERT_KWARGS:
            if kwargs.get(name):
                raise ValueError(f"Hyformer.forward does not support {name}=True; the final hidden states are in "
                                 f"output.extras['hidden_states']")
        if input_ids is None:
            raise ValueError("input_ids is required, an integer tensor of shape [B, T]")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks are {list(TASKS)}")
        if task == "prediction" and "prediction" not in self.heads:
            raise ValueError("task 'prediction' needs a prediction head: set num_prediction_tasks in the config")
        given = {name: value for name, value in (("kv_caches", kv_caches), ("past_key_values", past_key_values),
                                                 ("cache", cache)) if value is not None}
        if len({id(value) for value in given.values()}) > 1:
            raise ValueError(f"pass the cache once, as kv_caches, past_key_values or cache; got {sorted(given)}")
        cache = next(iter(given.values()), None)
        if use_cache and cache is None:
            cache = [None] * len(self.blocks)
        x, token_mask, cache = self.hidden_states(input_ids, causal=task == "lm", attention_mask=attention_mask,
                                                  cache=cache, position_ids=position_ids)
        logits = self.heads["prediction"](x[:, 0]) if task == "prediction" else self.heads[task](x)
        loss = None if labels is None else self.loss(logits, labels, task, None if attention_mask is None
                                                     else token_mask)
        out = HyformerOutput(loss=loss, logits=logits, **{CACHE_FIELD: cache},
                             extras={"hidden_states": x, "kv_caches": cache})
        return out if return_dict is not False else out.to_tuple()

    def loss(self, logits: torch.Tensor, labels, task: str, attention_mask=None) -> torch.Tensor:
        """The task's loss; for token tasks, padding positions (attention_mask 0, [B, T]) never count."""
        labels = torch.as_tensor(labels, device=logits.device)
        if task in ("lm", "mlm"):
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise ValueError(f"{task} labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            if attention_mask is not None:
                labels = labels.masked_fill(~attention_mask.bool(), IGNORE_INDEX)
            if task == "lm":
                return token_cross_entropy(logits[:, :-1], labels[:, 1:])
            return token_cross_entropy(logits, labels, label_smoothing=self.config.mlm_label_smoothing)
        return prediction_loss(logits, labels, self.config.num_prediction_tasks,
                               multilabel=self.config.prediction_type == "multilabel")


class HyformerForCausalLM(HyformerModel, GenerationMixin):
    """The same module tree and state dict as HyformerModel, for AutoModelForCausalLM and `generate()`
    (transformers' DynamicCache; the attention mask then covers cached and new tokens)."""
