"""VVALTConfig: the seed's fields, frozen, with a strict JSON round trip."""

from __future__ import annotations

import dataclasses
import math

from jaxmodels.config import ConfigMixin, check_positive_ints

FRAME_NAMES = ("semantic", "structural", "causal", "relational", "graph")
NUM_FRAMES = len(FRAME_NAMES)


@dataclasses.dataclass(frozen=True)
class VVALTConfig(ConfigMixin):
    """The original's `VVALTConfig` fields plus one switch for the graph adjacency.

    `hidden_dim=None` means 2 * frame_dim (as the original). `safe_bounds` is the verifier's clip range (the
    original hard-coded (-10, 10) and ignored this field; we honour it). `graph_propagation`: when a graph
    adjacency is given, the topology projector propagates each frame over it (see docs/vvalt.md); False keeps
    the original's behaviour, where the adjacency only touches the graph frame.
    """

    model_type = "vvalt"

    input_dim: int = 768
    frame_dim: int = 512
    task_dim: int = 64
    hidden_dim: int | None = None
    num_labels: int = 2
    seed: int = 42
    initializer_range: float = 0.02
    safe_bounds: tuple[float, float] = (-10.0, 10.0)
    graph_propagation: bool = True

    def __post_init__(self):
        check_positive_ints(self, ("input_dim", "frame_dim", "task_dim", "num_labels"), optional=("hidden_dim",))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"VVALTConfig.seed must be an integer in [0, 2**32) (a legacy NumPy seed), "
                             f"got {self.seed!r}")
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0):
            raise ValueError(f"VVALTConfig.initializer_range must be a positive number, got {self.initializer_range!r}")
        bounds = self.safe_bounds
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
                and bounds[0] < bounds[1]):
            raise ValueError(f"VVALTConfig.safe_bounds must be two finite numbers (low, high) with low < high, "
                             f"got {bounds!r}")
        # JSON gives a list; keep the frozen config hashable and its round trip exact.
        object.__setattr__(self, "safe_bounds", (float(bounds[0]), float(bounds[1])))
        if not isinstance(self.graph_propagation, bool):
            raise ValueError(f"VVALTConfig.graph_propagation must be a bool, got {self.graph_propagation!r}")

    def save_pretrained(self, directory) -> None:
        """Writes `directory/config.json` (as the seed's `config.save_pretrained(path)`)."""
        from pathlib import Path

        self.to_json(Path(directory) / "config.json")

    @property
    def resolved_hidden_dim(self) -> int:
        """H: the refiner's hidden width, 2 * frame_dim unless set."""
        return self.hidden_dim if self.hidden_dim is not None else 2 * self.frame_dim

    @property
    def num_frames(self) -> int:
        return NUM_FRAMES

    @property
    def frame_names(self) -> tuple[str, ...]:
        return FRAME_NAMES

    @classmethod
    def tiny(cls, **kw) -> VVALTConfig:
        """Prime, pairwise-distinct dimensions for tests (odd F exercises the structural frame's tail)."""
        return cls(**{**dict(input_dim=23, frame_dim=13, task_dim=7, hidden_dim=29, num_labels=3), **kw})

    @classmethod
    def base(cls, **kw) -> VVALTConfig:
        """The seed's defaults: BERT-sized input 768, frames 512, task 64."""
        return cls(**kw)

    @classmethod
    def preset(cls, name: str, **kw) -> VVALTConfig:
        presets = {"tiny": cls.tiny, "base": cls.base}
        if name not in presets:
            raise ValueError(f"unknown VVALT preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**kw)
