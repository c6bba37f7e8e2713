"""HTFRConfig: the field's hyperparameters (defaults of the original at 6088ffc), frozen, JSON round trip."""

from __future__ import annotations

import dataclasses
import json

from jaxmodels.htfr.hypertensor import INTERPOLATIONS

WEIGHT_MODES = ("softmax", "inverse")
LOSSES = ("mse", "logits_ce")


@dataclasses.dataclass(frozen=True)
class HTFRConfig:
    """Static settings of an HTFR field; hashable, so it can be a static argument of jitted functions.

    interpolation_reference and locality_radius default (None) to 5 * max_knn_radius, as the original.
    interpolation_weights: a {name: weight} mix used to draw each tensor's interpolation (uniform when empty).
    """

    top_k: int = 64
    train_top_k: int = 1024
    weight_mode: str = "softmax"
    epsilon: float = 1e-6
    eta: float = 0.05
    eta_g: float = 0.005
    max_knn_radius: float = 1.0
    interpolation_reference: float | None = None
    locality_radius: float | None = None
    interpolation_weights: tuple[tuple[str, float], ...] = ()
    randomize_interpolations: bool = True
    candidate_multiplier: int = 4  # the original's faiss_probe_multiplier: k * 4 anchor candidates
    error_threshold: float = 2.0
    max_error_queue: int = 128
    relocation_interval: int = 32
    usage_decay: float = 0.995
    chunk_size: int = 64  # samples per jitted sequential chunk (a speed knob; results do not depend on it)

    def __post_init__(self):
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"HTFRConfig.weight_mode {self.weight_mode!r} is not one of {WEIGHT_MODES}")
        for name in ("top_k", "train_top_k", "candidate_multiplier", "max_error_queue", "relocation_interval",
                     "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"HTFRConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.relocation_interval > self.max_error_queue:
            raise ValueError(f"HTFRConfig.relocation_interval {self.relocation_interval} exceeds max_error_queue "
                             f"{self.max_error_queue}: relocation could never trigger")
        if self.max_knn_radius <= 0 or self.epsilon <= 0:
            raise ValueError(f"HTFRConfig: max_knn_radius and epsilon must be > 0, got {self.max_knn_radius}, "
                             f"{self.epsilon}")
        weights = dict(self.interpolation_weights)
        unknown = sorted(set(weights) - set(INTERPOLATIONS))
        if unknown:
            raise ValueError(f"HTFRConfig.interpolation_weights: unknown interpolations {unknown}; "
                             f"expected names from {INTERPOLATIONS}")
        if weights and (any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0):
            raise ValueError(f"HTFRConfig.interpolation_weights must be >= 0 with a positive sum, got {weights}")

    @property
    def reference(self) -> float:
        return 5.0 * self.max_knn_radius if self.interpolation_reference is None else self.interpolation_reference

    @property
    def radius(self) -> float:
        return self.reference if self.locality_radius is None else self.locality_radius

    def interpolation_probabilities(self) -> list[float]:
        """Probability of each name in INTERPOLATIONS (uniform when interpolation_weights is empty)."""
        weights = dict(self.interpolation_weights) or {name: 1.0 for name in INTERPOLATIONS}
        raw = [float(weights.get(name, 0.0)) for name in INTERPOLATIONS]
        return [v / sum(raw) for v in raw]

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["interpolation_weights"] = dict(self.interpolation_weights)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HTFRConfig":
        d = json.loads(text)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"HTFRConfig.from_json: unknown keys {unknown}")
        d["interpolation_weights"] = tuple(sorted(d.get("interpolation_weights", {}).items()))
        return cls(**d)
