"""Hyformer: one set of weights, causal (`lm`) and bidirectional (`mlm`, `prediction`) tasks.

Architecture and parameter layout of the original at commit af5f42d: pre-norm RMSNorm blocks, interleaved
RoPE, SwiGLU MLP of width 4*D with biases, a final LayerNorm, `lm` / `mlm` heads tied to the embedding,
and an optional prediction head (LayerNorm -> dropout -> linear) on the first token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels import checkpoint, losses
from jaxmodels.config import ConfigMixin, check_numbers, check_positive_ints
from jaxmodels.family import Family, RemoteCode, register
from jaxmodels.hf.config_policy import HFConfigReader
from jaxmodels.hf.tables import HYFORMER
from jaxmodels.layers.cache import KVCache
from jaxmodels.layers.decoder import Decoder, DecoderSpec
from jaxmodels.layers.dropout import dropout
from jaxmodels.layers.linear import Linear
from jaxmodels.layers.norms import LayerNorm
from jaxmodels.pretrained import Pretrained

TASKS = ("lm", "mlm", "prediction")
PREDICTION_TYPES = ("classification", "regression", "multilabel")
MLP_RATIO = 4


@dataclasses.dataclass(frozen=True)
class HyformerConfig(ConfigMixin):
    """The original's fields, plus how the built-in prediction head is trained."""

    model_type = "hyformer"

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    max_seq_len: int = 128
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    eps: float = 1e-6
    num_prediction_tasks: int | None = None
    prediction_task_type: str | None = None  # classification | regression | multilabel; None: by num labels
    prediction_dropout: float = 0.1
    mlm_label_smoothing: float = 0.0

    def __post_init__(self):
        check_positive_ints(self, ("vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len"),
                            optional=("num_prediction_tasks",))
        check_numbers(self, ("attn_dropout", "resid_dropout", "eps", "prediction_dropout", "mlm_label_smoothing"))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head dim d_model/n_heads={self.d_model // self.n_heads} must be even for RoPE")
        for name in ("attn_dropout", "resid_dropout", "prediction_dropout", "mlm_label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"HyformerConfig.{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.prediction_task_type not in (None, *PREDICTION_TYPES):
            raise ValueError(f"prediction_task_type must be one of {PREDICTION_TYPES} or None, "
                             f"got {self.prediction_task_type!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def prediction_type(self) -> str:
        if self.prediction_task_type is not None:
            return self.prediction_task_type
        return "regression" if self.num_prediction_tasks == 1 else "classification"

    def decoder_spec(self) -> DecoderSpec:
        return DecoderSpec(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_heads, head_dim=self.head_dim, ffn_dim=MLP_RATIO * self.d_model,
            max_seq_len=self.max_seq_len, norm_eps=self.eps, final_norm="layernorm", final_norm_eps=self.eps,
            rope_interleaved=True, mlp_bias=True, attn_dropout=self.attn_dropout, resid_dropout=self.resid_dropout)

    @classmethod
    def tiny(cls, **kw) -> HyformerConfig:
        """Prime, pairwise-distinct dimensions for tests: a swapped axis fails loudly."""
        return cls(**{**dict(vocab_size=17, d_model=24, n_heads=4, n_layers=2, max_seq_len=31), **kw})

    @classmethod
    def small(cls, **kw) -> HyformerConfig:
        """The benchmark and demo size (d 256, 4 layers) with the byte-level vocabulary."""
        return cls(**{**dict(vocab_size=260, d_model=256, n_heads=8, n_layers=4, max_seq_len=256), **kw})

    @classmethod
    def base(cls, **kw) -> HyformerConfig:
        """The original's defaults (configs/hyformer/base.json uses vocab 71 and one layer)."""
        return cls(**{**dict(vocab_size=71, d_model=512, n_heads=8, n_layers=6, max_seq_len=128), **kw})

    @classmethod
    def preset(cls, name: str, **kw) -> HyformerConfig:
        presets = {"tiny": cls.tiny, "small": cls.small, "base": cls.base}
        if name not in presets:
            raise ValueError(f"unknown Hyformer preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**kw)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ModelOutput:
    """logits [B, T, V] (or [B, L] for prediction); loss a scalar when labels were given;
    extras: "hidden_states" [B, T, D] after the final norm and "kv_caches" (a KVCache or None)."""

    logits: jax.Array
    loss: jax.Array | None = None
    extras: dict[str, Any] | None = None


class PredictionHeadModule(nnx.Module):
    """LayerNorm -> dropout -> Linear(D, L) on a pooled vector [B, D] -> [B, L]."""

    def __init__(self, d_model: int, num_labels: int, *, dropout: float = 0.1, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.norm = LayerNorm(d_model, eps=1e-5, param_dtype=param_dtype)
        self.classifier = Linear(d_model, num_labels, use_bias=True, param_dtype=param_dtype,
                                 axes=("embed", "labels"), rngs=rngs)
        self.dropout = dropout

    def __call__(self, pooled: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        return self.classifier(dropout(self.norm(pooled), self.dropout, dropout_key))


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks are {list(TASKS)}")


class Hyformer(Pretrained, Decoder):
    """The Flax NNX Hyformer. Call as `model(input_ids, task="lm", attention_mask=None, labels=None)`.

    `Hyformer.from_pretrained(dir)` reads our checkpoints, the original's and our PyTorch twin's.
    """

    def __init__(self, config: HyformerConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(config.decoder_spec(), param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.prediction_head = None if config.num_prediction_tasks is None else PredictionHeadModule(
            config.d_model, config.num_prediction_tasks, dropout=config.prediction_dropout,
            param_dtype=param_dtype, rngs=rngs)

    @classmethod
    def from_config(cls, config: HyformerConfig, *, seed: int = 0, param_dtype=jnp.float32) -> Hyformer:
        return cls(config, param_dtype=param_dtype, rngs=nnx.Rngs(seed))

    def get_num_params(self, trainable_only: bool = False) -> int:
        """Parameter count; the tied heads are the embedding, counted once (all parameters are trainable)."""
        del trainable_only
        return sum(int(v.size) for v in checkpoint.flat_params(self).values())

    def __call__(self, input_ids: jax.Array, task: str = "lm", attention_mask: jax.Array | None = None,
                 labels: jax.Array | None = None, kv_caches: KVCache | None = None, use_cache: bool = False,
                 positions: jax.Array | None = None, dropout_key: jax.Array | None = None) -> ModelOutput:
        """input_ids [B, T]; attention_mask [B, T] (1 = token, 0 = padding); labels per task (see losses).

        `dropout_key` switches dropout on (training); None evaluates deterministically.
        """
        _check_task(task)
        if task == "prediction" and self.prediction_head is None:
            raise ValueError("task 'prediction' needs a prediction head: set num_prediction_tasks in the config")
        if use_cache and kv_caches is None:
            kv_caches = self.init_cache(input_ids.shape[0])
        k_body, k_head = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        x, kv_caches = self.hidden_states(input_ids, causal=task == "lm", attention_mask=attention_mask,
                                          positions=positions, kv_caches=kv_caches, dropout_key=k_body)
        if task == "prediction":
            logits = self.prediction_head(x[:, 0], k_head)  # [B, L]
        else:
            logits = self.head_logits(x)  # [B, T, V]
        loss = None if labels is None else self.loss(logits, labels, task, attention_mask)
        return ModelOutput(logits, loss, {"hidden_states": x, "kv_caches": kv_caches})

    def head_logits(self, x: jax.Array) -> jax.Array:
        """Final-normed hidden states [..., D] (from `hidden_states`) -> LM logits [..., V] (the tied embedding)."""
        return self.embed.decode(x, layers=self.spec.layers)

    def loss(self, logits: jax.Array, labels: jax.Array, task: str, attention_mask: jax.Array | None = None):
        """The task's loss; for token tasks, padding positions (attention_mask 0) never count."""
        if task in ("lm", "mlm"):
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"{task} labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            if attention_mask is not None:
                labels = jnp.where(attention_mask.astype(bool), labels, losses.IGNORE_INDEX)
            if task == "lm":
                return losses.compute_lm_loss(logits, labels)
            return losses.compute_mlm_loss(logits, labels, label_smoothing=self.config.mlm_label_smoothing)
        return losses.compute_prediction_loss(logits, labels, self.config.num_prediction_tasks,
                                              multilabel=self.config.prediction_type == "multilabel")


class PredictionHead(nnx.Module):
    """The seed's downstream wrapper: a Hyformer body with its own norm and classifier on the first token.

    `model(input_ids, task="prediction", attention_mask, labels) -> (logits [B, L], loss or None)`.
    """

    def __init__(self, base_model: Hyformer, num_labels: int, d_model: int | None = None, dropout: float = 0.1,
                 *, multilabel: bool = False, rngs: nnx.Rngs | None = None):
        d_model = base_model.config.d_model if d_model is None else d_model
        if d_model != base_model.config.d_model:
            raise ValueError(f"d_model={d_model} does not match the base model's d_model={base_model.config.d_model}")
        self.base_model = base_model
        self.head = PredictionHeadModule(d_model, num_labels, dropout=dropout, rngs=rngs or nnx.Rngs(0))
        self.num_labels = num_labels
        self.multilabel = multilabel

    def __call__(self, input_ids, task: str = "prediction", attention_mask=None, labels=None, dropout_key=None):
        _check_task(task)
        k_body, k_head = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        x, _ = self.base_model.hidden_states(input_ids, causal=task == "lm", attention_mask=attention_mask,
                                             dropout_key=k_body)
        logits = self.head(x[:, 0], k_head)
        loss = None if labels is None else losses.compute_prediction_loss(
            logits, labels, self.num_labels, multilabel=self.multilabel)
        return logits, loss


# -- the family record --------------------------------------------------------------------------------------
# The original's config.json holds only these fields (and no model_type); our twin's adds the rest of ours.
ORIGINAL_FIELDS = ("vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len", "attn_dropout", "resid_dropout",
                   "eps", "num_prediction_tasks")
_CODE_FILES = ("configuration_hyformer.py", "modeling_hyformer.py")


def _from_hf(hf: dict, source: str) -> tuple[HyformerConfig, dict]:
    """The twin's or the original's config.json; the twin also reads tie_word_embeddings (always True)."""
    fields = {f.name: f.name for f in dataclasses.fields(HyformerConfig)}
    reader = HFConfigReader("hyformer", fields, {"tie_word_embeddings": (True,)})
    values, ignored = reader.read({k: v for k, v in hf.items() if k != "model_type"}, source=source)
    return HyformerConfig.from_dict(values, source=source), ignored


def _to_hf(config: HyformerConfig, cls: type) -> dict:
    return {**config.to_dict(), "architectures": ["HyformerForCausalLM"], "tie_word_embeddings": True}


def _original_layout(config: HyformerConfig, hf_config: dict, tensors: list) -> tuple[dict, list]:
    """The original's files: only its config fields, and heads.lm / heads.mlm written as copies of the embedding."""
    extras = {k: v for k, v in config.to_dict().items() if k not in ORIGINAL_FIELDS and k != "model_type"}
    defaults = HyformerConfig(vocab_size=config.vocab_size).to_dict()
    changed = sorted(k for k, v in extras.items() if v != defaults[k])
    if changed:
        raise ValueError(f"the original Hyformer config cannot represent {changed}; use --layout transformers")
    embed = next(t for t in tensors if t.key == "embed.weight")
    heads = [dataclasses.replace(embed, key=k) for k in ("heads.lm.weight", "heads.mlm.weight")]
    return {k: config.to_dict()[k] for k in ORIGINAL_FIELDS}, tensors + heads


HYFORMER_FAMILY = register(Family(
    name="hyformer", config_class=HyformerConfig, model_classes=(Hyformer,), table=HYFORMER,
    from_hf=_from_hf, to_hf=_to_hf,
    tied=lambda config: {"heads.lm.weight": "embed.weight", "heads.mlm.weight": "embed.weight"},
    detect=lambda hf: all(k in hf for k in ("vocab_size", "d_model", "n_heads", "n_layers")),
    layouts={"original": _original_layout},
    remote_code=RemoteCode("jaxmodels_interop.hf_hyformer", {f: f for f in _CODE_FILES}, lambda cls: {
        "AutoConfig": "configuration_hyformer.HyformerConfig", "AutoModel": "modeling_hyformer.HyformerModel",
        "AutoModelForCausalLM": "modeling_hyformer.HyformerForCausalLM"}),
    twin="jaxmodels_interop.hf_hyformer",
    presets={"tiny": HyformerConfig.tiny, "small": HyformerConfig.small, "base": HyformerConfig.base}))
