"""The interpretability trace for a whole batch: the original's fields as arrays, and its text summary.

`build_trace` runs inside the jitted forward and returns arrays with a leading batch axis B. `VVALTTrace`
wraps them; `trace.to_dict(i)` gives sample i in the original's exact dictionary layout (plus our extra
`attention` and `verification` entries) and `trace.explain(i)` its text summary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels.vvalt.config import FRAME_NAMES

NUM_SAMPLES = 5  # the original's InterpretabilityProjector(num_samples=5), capped at frame_dim
_VECTOR_NAMES = {"input": "input", "attention_output": "attention", "refined_output": "refined",
                 "final_output": "final"}


def _middle_indices(a: np.ndarray) -> np.ndarray:
    """Host side of _median: positions of the lower and upper middle elements of each row, int32 [..., 2]."""
    n = a.shape[-1]
    kth = [(n - 1) // 2, n // 2]
    return np.argpartition(a, kth, axis=-1)[..., kth].astype(np.int32)


def _median(x: jax.Array) -> jax.Array:
    """np.median over the last axis of x [..., N] -> [...], exactly.

    jnp.median sorts, and XLA:CPU's sort is slow: ~190 ms for the [256, 5, 512] frames here, and the trace
    takes 14 medians per sample. NumPy's selection (argpartition, ~15 ms) finds the two middle positions on
    the host; the values are gathered and averaged on the device, as np.median averages them. Indices keep the
    callback's output int32 whatever the x64 setting. The statistics carry no gradient.
    """
    x = jax.lax.stop_gradient(x)
    idx = jax.pure_callback(_middle_indices, jax.ShapeDtypeStruct((*x.shape[:-1], 2), jnp.int32), x,
                            vmap_method="expand_dims")
    mid = jnp.take_along_axis(x, idx, axis=-1)  # [..., 2]
    value = (mid[..., 0] + mid[..., 1]) / 2
    return jnp.where(jnp.any(jnp.isnan(x), axis=-1), jnp.nan, value)  # np.median of a row with NaN is NaN


def vector_stats(x: jax.Array, n: int) -> dict[str, Any]:
    """The original's `analyze_vector` for every vector of x [..., N] at once; n samples per vector.

    Every leaf has shape x.shape[:-1] (samples: [..., n]). Stacking vectors before the call keeps the
    traced graph small (one median and one top_k per call, not one per vector), which shortens compiles.
    """
    mean = jnp.mean(x, axis=-1)
    std = jnp.std(x, axis=-1)
    safe_std = jnp.where(std == 0, 1.0, std)
    z = (x - mean[..., None]) / safe_std[..., None]
    absx = jnp.abs(x)
    # The original's np.argsort(|x|)[-n:][::-1], with ties in stable-sort order (higher index first; the
    # original's quicksort leaves it unspecified). top_k on the reversed vector gives exactly that order and,
    # unlike a full sort, is cheap on the CPU.
    top = x.shape[-1] - 1 - jax.lax.top_k(jnp.flip(absx, axis=-1), n)[1]  # [..., n]
    frac = lambda m: jnp.mean(m.astype(x.dtype), axis=-1)  # noqa: E731 - a one-line helper
    return {
        "statistics": {"mean": mean, "std": std, "min": jnp.min(x, axis=-1), "max": jnp.max(x, axis=-1),
                       "median": _median(x), "norm_l1": jnp.sum(absx, axis=-1),
                       "norm_l2": jnp.sqrt(jnp.sum(x * x, axis=-1)), "norm_inf": jnp.max(absx, axis=-1)},
        "sparsity": {"zero_ratio": frac(x == 0), "near_zero_ratio": frac(absx < 0.01), "active_ratio": frac(absx >= 0.1)},
        "distribution": {"positive_ratio": frac(x > 0), "negative_ratio": frac(x < 0),
                         "skewness": jnp.where(std == 0, 0.0, jnp.mean(z ** 3, axis=-1)),
                         "kurtosis": jnp.where(std == 0, 0.0, jnp.mean(z ** 4, axis=-1) - 3.0)},
        "samples": {"first_n": x[..., :n], "last_n": x[..., -n:], "top_magnitude_indices": top.astype(jnp.int32),
                    "top_magnitude_values": jnp.take_along_axis(x, top, axis=-1)},
    }


def _split(stats: dict[str, Any], names) -> dict[str, Any]:
    """Stats of stacked vectors [B, K, ...] -> {name: stats [B, ...]} along axis 1."""
    return {name: jax.tree.map(lambda a, i=i: a[:, i], stats) for i, name in enumerate(names)}


def frame_stats(frames: jax.Array, n: int) -> dict[str, Any]:
    """`analyze_frames` for frames [B, K, F]: per-frame statistics plus pairwise cosine similarities."""
    out = _split(vector_stats(frames, n), FRAME_NAMES)
    norms = jnp.linalg.norm(frames, axis=-1)  # [B, K]
    dots = jnp.einsum("BKF,BJF->BKJ", frames, frames)  # [B, K, K]
    denom = norms[:, :, None] * norms[:, None, :]
    cos = jnp.where(denom == 0, 0.0, dots / jnp.where(denom == 0, 1.0, denom))  # the original's 0 for a zero vector
    sims = {f"{a}_vs_{FRAME_NAMES[j]}": cos[:, i, j]
            for i, a in enumerate(FRAME_NAMES) for j in range(i + 1, len(FRAME_NAMES))}
    mean = jnp.mean(jnp.stack(list(sims.values()), axis=-1), axis=-1)
    out["comparison"] = {"pairwise_similarities": sims, "mean_similarity": mean, "diversity": 1.0 - mean}
    return out


def _change(new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.linalg.norm(new - old, axis=-1) / (jnp.linalg.norm(old, axis=-1) + 1e-8)


def build_trace(*, x, t, frames, weighted, task_weights, attention, attention_output, refined, final,
                nonfinite) -> dict[str, Any]:
    """All trace arrays for a batch. x [B, I], t [B, T], frames/weighted [B, K, F], task_weights [B, K],
    attention [B, K, K], attention_output/refined/final [B, F], nonfinite [B] (entries the verifier replaced)."""
    n = min(NUM_SAMPLES, final.shape[-1])
    outputs = ("attention_output", "refined_output", "final_output")
    return {
        "input": vector_stats(x, n),
        "encoded_frames": frame_stats(frames, n),
        "weighted_frames": frame_stats(weighted, n),
        **_split(vector_stats(jnp.stack([attention_output, refined, final], axis=1), n), outputs),
        "task_weights": {name: task_weights[:, i] for i, name in enumerate(FRAME_NAMES)},
        "transformations": {"attention_to_refined_change": _change(refined, attention_output),
                            "refined_to_final_change": _change(final, refined),
                            "attention_to_final_change": _change(final, attention_output)},
        "attention": attention,
        "verification": {"input_nonfinite": jnp.sum(~jnp.isfinite(x), axis=-1),
                         "task_nonfinite": jnp.sum(~jnp.isfinite(t), axis=-1),
                         "output_nonfinite": nonfinite, "sanitized": nonfinite > 0},
    }


# jax returns dicts with sorted keys; these restore the original's key order for to_dict().
_STAT_KEYS = {"statistics": ("mean", "std", "min", "max", "median", "norm_l1", "norm_l2", "norm_inf"),
              "sparsity": ("zero_ratio", "near_zero_ratio", "active_ratio"),
              "distribution": ("positive_ratio", "negative_ratio", "skewness", "kurtosis"),
              "samples": ("first_n", "last_n", "top_magnitude_indices", "top_magnitude_values")}
_PAIRS = tuple(f"{a}_vs_{b}" for i, a in enumerate(FRAME_NAMES) for b in FRAME_NAMES[i + 1:])
_TOP_KEYS = ("input", "encoded_frames", "weighted_frames", "attention_output", "refined_output", "final_output",
             "task_weights", "transformations", "attention", "verification")
_CHANGE_KEYS = ("attention_to_refined_change", "refined_to_final_change", "attention_to_final_change")
_CHECK_KEYS = ("input_nonfinite", "task_nonfinite", "output_nonfinite", "sanitized")


def _vector(d: dict, name: str, length: int) -> dict:
    return {"name": name, "shape": (length,), **{g: {k: d[g][k] for k in keys} for g, keys in _STAT_KEYS.items()}}


def _frames(d: dict, length: int) -> dict:
    out = {name: _vector(d[name], f"{name}_frame", length) for name in FRAME_NAMES}
    c = d["comparison"]
    out["comparison"] = {"pairwise_similarities": {k: c["pairwise_similarities"][k] for k in _PAIRS},
                         "mean_similarity": c["mean_similarity"], "diversity": c["diversity"]}
    return out


def _to_python(tree: Any, index: int) -> Any:
    if isinstance(tree, dict):
        return {k: _to_python(v, index) for k, v in tree.items()}
    row = np.asarray(tree)[index]
    return row.tolist() if row.ndim else row.item()


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VVALTTrace:
    """A batch of reasoning traces: `arrays` holds the fields of `build_trace`, each with leading axis B."""

    arrays: dict[str, Any]
    input_dim: int = dataclasses.field(metadata=dict(static=True))
    frame_dim: int = dataclasses.field(metadata=dict(static=True))

    @property
    def batch_size(self) -> int:
        return int(self.arrays["attention"].shape[0])

    def to_dict(self, index: int = 0) -> dict[str, Any]:
        """Sample `index` in the original's layout (names, shapes, Python floats and lists)."""
        if not -self.batch_size <= index < self.batch_size:
            raise IndexError(f"trace index {index} is out of range for a batch of {self.batch_size}")
        raw = _to_python(self.arrays, index)
        out = {}
        for key in _TOP_KEYS:
            if key in _VECTOR_NAMES:
                out[key] = _vector(raw[key], _VECTOR_NAMES[key], self.input_dim if key == "input" else self.frame_dim)
            elif key.endswith("_frames"):
                out[key] = _frames(raw[key], self.frame_dim)
            elif key == "task_weights":
                out[key] = {name: raw[key][name] for name in FRAME_NAMES}
            elif key == "transformations":
                out[key] = {k: raw[key][k] for k in _CHANGE_KEYS}
            elif key == "verification":
                out[key] = {k: raw[key][k] for k in _CHECK_KEYS}
            else:
                out[key] = raw[key]
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [self.to_dict(i) for i in range(self.batch_size)]

    def explain(self, index: int | None = None) -> str:
        """The text summary of sample `index`, or of every sample when index is None."""
        if index is None:
            return "\n\n".join(self.explain(i) for i in range(self.batch_size))
        return format_trace(self.to_dict(index), index)


def format_trace(trace: dict[str, Any], index: int = 0) -> str:
    """A human-readable summary of one sample's trace, opening like the original's."""
    lines = ["=== V.V.A.L.T Reasoning Trace ===", f"Sample: {index}", "",
             f"Input: norm={trace['input']['statistics']['norm_l2']:.4f}", "", "Task-Conditioned Frame Weights:"]
    lines += [f"  {name}: {w:.4f}" for name, w in trace["task_weights"].items()]
    lines += ["", f"Frame Diversity: {trace['encoded_frames']['comparison']['diversity']:.4f}", "",
              "Frame Attention (row attends to column):",
              "  " + " ".join(f"{n[:6]:>7}" for n in FRAME_NAMES)]
    lines += [f"  {FRAME_NAMES[i][:6]:>6} " + " ".join(f"{a:7.4f}" for a in row)
              for i, row in enumerate(trace["attention"])]
    lines += ["", "Transformation Magnitudes:"]
    lines += [f"  {name}: {value:.4f}" for name, value in trace["transformations"].items()]
    final = trace["final_output"]["statistics"]
    lines += ["", f"Final Output: norm={final['norm_l2']:.4f}, mean={final['mean']:.4f}, std={final['std']:.4f}"]
    check = trace["verification"]
    if check["sanitized"] or check["input_nonfinite"] or check["task_nonfinite"]:
        lines.append(f"WARNING: non-finite values (input {check['input_nonfinite']}, task {check['task_nonfinite']}, "
                     f"output {check['output_nonfinite']}); the verifier replaced them (NaN -> 0, inf -> bounds)")
    else:
        lines.append("Verification: all values finite and within the safe bounds")
    return "\n".join(lines)
