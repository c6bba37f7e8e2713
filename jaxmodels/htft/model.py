"""HypertensorFieldTransformer: Stage 1 (embedding from the projected context) -> Stage 2 (truncated logits
from the Stage 1 prediction plus the raw tail), each an HTFR field behind a CountSketch + SRHT projection.

Letters: N samples, R stage-1 raw width, E stage-1 output width, L*H tail width, C = S + 1 compact classes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmodels.htfr import HTFRConfig, HTFRModel
from jaxmodels_kernels.countsketch import make_count_sketch
from jaxmodels_kernels.projection import ProjectionStack
from jaxmodels_kernels.srht import make_block_srht


@dataclasses.dataclass
class StageState:
    """One stage: its projector (raw -> field input), its field and free-form JSON metadata."""

    model: HTFRModel
    projector: ProjectionStack
    metadata: dict


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """How to build one stage: tensors M, CountSketch width (0 = none), SRHT width, field settings, tau."""

    tensors: int
    countsketch_dim: int
    srht_dim: int
    field: HTFRConfig
    tau: float = 1.0
    block_size: int = 256


def projection_flops(projector: ProjectionStack) -> int:
    """Floating-point operations of one sample through a projector: CountSketch (a sign multiply and an add per raw
    coordinate), per SRHT tile the sign multiply, the FWHT (P log2 P adds and subtracts) and the scaling of the kept
    coordinates, then the block RMSNorm (square, sum, scale: 3 per output)."""
    flops = 2 * projector.raw_dim if projector.countsketch is not None else 0
    for p in projector.srht_params:
        flops += p.tile_count * (p.padded_dim + p.padded_dim * int(np.log2(p.padded_dim))) + p.target_dim
        flops += 3 * p.target_dim if p.block_size else 0
    if projector.post_linear is not None:
        flops += 2 * int(np.prod(projector.post_linear.shape))
    return int(flops)


def field_flops(model: HTFRModel, k: int | None = None) -> int:
    """Floating-point operations of one prediction of a field with M tensors, D inputs, O outputs: the signed
    distances to every tensor (2 M D + M), then the k selected tensors' weighted controls (2 * 3 k O). The two
    top-k selections and the locality weights (O(M) comparisons, O(k) exponentials) are not counted."""
    k = k or model.config.top_k
    m, d, o = model.size, model.input_dim, model.output_dim
    return int(2 * m * d + m + 6 * min(k, m) * o)


def make_stage(spec: StageSpec, raw_dim: int, out_dim: int, seed: int) -> StageState:
    """A stage drawn from `seed`: CountSketch, SRHT, then the field's tensors (original draw order)."""
    rng = np.random.default_rng(seed)
    cs = make_count_sketch(raw_dim, spec.countsketch_dim, seed=rng) if spec.countsketch_dim else None
    width = spec.countsketch_dim or raw_dim
    srht = make_block_srht(width, spec.srht_dim, block_size=min(spec.block_size, spec.srht_dim), seed=rng)
    projector = ProjectionStack(raw_dim, (srht,), countsketch=cs)
    model = HTFRModel.random(spec.tensors, projector.output_dim, out_dim, spec.field, seed=seed, tau=spec.tau)
    meta = {"raw_dim": raw_dim, "output_dim": out_dim, "tensors": spec.tensors, "countsketch_dim": spec.countsketch_dim,
            "srht_dim": spec.srht_dim, "tau": spec.tau, "seed": seed}
    return StageState(model=model, projector=projector, metadata=meta)


class HypertensorFieldTransformer:
    """The two-stage student. Stage 2 consumes the Stage 1 *prediction*, never the target (as the original)."""

    def __init__(self, stage1: StageState, stage2: StageState):
        e = stage1.model.output_dim
        tail = stage2.projector.raw_dim - e
        if any(s.projector.output_dim != s.model.input_dim for s in (stage1, stage2)):
            raise ValueError("HypertensorFieldTransformer: a stage's projector output width differs from its field's "
                             f"input width (stage 1: {stage1.projector.output_dim} vs {stage1.model.input_dim}, "
                             f"stage 2: {stage2.projector.output_dim} vs {stage2.model.input_dim})")
        if tail < 0:
            raise ValueError(f"HypertensorFieldTransformer: stage 2 raw width {stage2.projector.raw_dim} is smaller "
                             f"than the stage 1 output width {e}")
        self.stage1, self.stage2 = stage1, stage2
        self.tail_dim = tail

    @classmethod
    def create(cls, raw_dim: int, tail_dim: int, target_dim: int, num_classes: int, stage1: StageSpec,
               stage2: StageSpec, *, seed: int) -> "HypertensorFieldTransformer":
        """Stage 1: raw_dim -> target_dim (seed); stage 2: target_dim + tail_dim -> num_classes (seed + 1)."""
        return cls(make_stage(stage1, raw_dim, target_dim, seed),
                   make_stage(stage2, target_dim + tail_dim, num_classes, seed + 1))

    @property
    def num_classes(self) -> int:
        return self.stage2.model.output_dim

    def step(self, context, tail, target_token, stage1_target, *, train: bool = True,
             mode: str = "sequential") -> tuple[np.ndarray, np.ndarray]:
        """context [N, R], tail [N, L*H], target_token [N] compact ids, stage1_target [N, E] ->
        (logits [N, C], stage-1 embeddings [N, E]), both made before this call's updates.

        train=True applies the online rule of each field (mse for Stage 1, cross-entropy for Stage 2); in
        sequential mode a batch gives exactly what the original's one-sample loop gives, because Stage 1's updates
        never depend on Stage 2. train=False only predicts (top_k); target_token and stage1_target are then unused.
        """
        context, tail = np.atleast_2d(np.asarray(context, np.float32)), np.atleast_2d(np.asarray(tail, np.float32))
        if tail.shape[1] != self.tail_dim or tail.shape[0] != context.shape[0]:
            raise ValueError(f"HypertensorFieldTransformer.step: tail of shape {tail.shape}, expected "
                             f"[{context.shape[0]}, {self.tail_dim}]")
        p1 = self.stage1.projector.project(context)  # [N, D1]
        if train:
            emb = self.stage1.model.predict_and_update(p1, np.asarray(stage1_target, np.float32), loss="mse",
                                                       mode=mode)
        else:
            emb = self.stage1.model.predict(p1)
        emb = np.atleast_2d(np.asarray(emb, np.float32))  # [N, E]
        p2 = self.stage2.projector.project(np.concatenate([emb, tail], axis=1))  # [N, D2]
        if train:
            labels = np.asarray(target_token, np.int64).reshape(-1)
            logits = self.stage2.model.predict_and_update(p2, labels, loss="logits_ce", mode=mode)
        else:
            logits = self.stage2.model.predict(p2)
        return np.atleast_2d(np.asarray(logits, np.float32)), emb

    def predict(self, context, tail) -> np.ndarray:
        """Inference: context [N, R], tail [N, L*H] -> truncated logits [N, C] (`step` without updates)."""
        return self.step(context, tail, None, None, train=False)[0]

    def predict_flops(self) -> dict[str, int]:
        """Floating-point operations of `predict` per sample, by part (projections and fields at their top_k; the
        ContextBuilder's concatenation and n-gram hashing are memory work, not counted)."""
        parts = {}
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            parts[f"{name}_projection"] = projection_flops(stage.projector)
            parts[f"{name}_field"] = field_flops(stage.model)
        return {**parts, "total": sum(parts.values())}

    def diagnostics(self) -> dict[str, dict]:
        """Each stage's field statistics (usage, unused tensors, queue length, relocations, ...)."""
        return {"stage1": self.stage1.model.diagnostics(), "stage2": self.stage2.model.diagnostics()}
