"""The transformers config of the PyTorch Hyformer twin (`model_type="hyformer"`).

Self-contained (transformers and the standard library only): exports ship this file for
`trust_remote_code=True`. The fields are the original Hyformer's (commit af5f42d) plus how our
prediction head is trained; the standard transformers names (`hidden_size`, ...) are aliases.
"""

from __future__ import annotations

from transformers import PretrainedConfig

PREDICTION_TYPES = ("classification", "regression", "multilabel")


class HyformerConfig(PretrainedConfig):
    """vocab_size is required; the heads are always tied to the embedding (`tie_word_embeddings` is True)."""

    model_type = "hyformer"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
                     "max_position_embeddings": "max_seq_len"}

    def __init__(self, vocab_size: int | None = None, d_model: int = 512, n_heads: int = 8, n_layers: int = 6,
                 max_seq_len: int = 128, attn_dropout: float = 0.0, resid_dropout: float = 0.0, eps: float = 1e-6,
                 num_prediction_tasks: int | None = None, prediction_task_type: str | None = None,
                 prediction_dropout: float = 0.1, mlm_label_smoothing: float = 0.0, **kwargs):
        if vocab_size is None:
            raise ValueError("HyformerConfig: vocab_size is required")
        sizes = dict(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                     max_seq_len=max_seq_len)
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"HyformerConfig.{name} must be a positive integer, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"HyformerConfig: d_model={d_model} must be divisible by n_heads={n_heads}")
        if (d_model // n_heads) % 2:
            raise ValueError(f"HyformerConfig: head dim d_model/n_heads={d_model // n_heads} must be even for RoPE")
        rates = dict(attn_dropout=attn_dropout, resid_dropout=resid_dropout, prediction_dropout=prediction_dropout,
                     mlm_label_smoothing=mlm_label_smoothing)
        for name, value in rates.items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"HyformerConfig.{name} must lie in [0, 1), got {value}")
        if num_prediction_tasks is not None and (isinstance(num_prediction_tasks, bool)
                                                 or not isinstance(num_prediction_tasks, int)
                                                 or num_prediction_tasks <= 0):
            raise ValueError(f"HyformerConfig.num_prediction_tasks must be a positive integer or None, "
                             f"got {num_prediction_tasks!r}")
        if prediction_task_type not in (None, *PREDICTION_TYPES):
            raise ValueError(f"HyformerConfig.prediction_task_type must be one of {PREDICTION_TYPES} or None, "
                             f"got {prediction_task_type!r}")
        if not kwargs.pop("tie_word_embeddings", True):
            raise ValueError("HyformerConfig: tie_word_embeddings=False is not supported; Hyformer's lm and mlm "
                             "heads are the token embedding")
        self.vocab_size, self.d_model, self.n_heads, self.n_layers = vocab_size, d_model, n_heads, n_layers
        self.max_seq_len, self.eps = max_seq_len, float(eps)
        self.attn_dropout, self.resid_dropout = float(attn_dropout), float(resid_dropout)
        self.num_prediction_tasks, self.prediction_task_type = num_prediction_tasks, prediction_task_type
        self.prediction_dropout, self.mlm_label_smoothing = float(prediction_dropout), float(mlm_label_smoothing)
        self.tie_word_embeddings = True
        super().__init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def prediction_type(self) -> str:
        """The prediction loss: the explicit type, else regression for one output and classification otherwise."""
        if self.prediction_task_type is not None:
            return self.prediction_task_type
        return "regression" if self.num_prediction_tasks == 1 else "classification"
