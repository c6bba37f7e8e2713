"""A plain, per-sample NumPy V.V.A.L.T written from the original's equations (originals.md §1.2-1.4).

The yardstick for tests and the benchmark: one float64 sample at a time, dicts of frames, the original's
global-RNG initialisation procedure (with the caller's global NumPy RNG state restored afterwards) and its
trace dictionaries. Nothing here is shared with the JAX model, so agreement checks both.
"""

from __future__ import annotations

import numpy as np

NAMES = ["semantic", "structural", "causal", "relational", "graph"]


def reference_weights(input_dim: int, frame_dim: int, task_dim: int, hidden_dim: int | None = None,
                      seed: int = 42) -> dict[str, np.ndarray]:
    """The original's weights: every component reseeds the global legacy RNG, then draws."""
    hidden_dim = hidden_dim or 2 * frame_dim
    saved = np.random.get_state()
    try:
        w = {}
        np.random.seed(seed)
        for name in NAMES:
            m = np.random.randn(input_dim, frame_dim)
            w[f"encoder.W_{name}"] = np.linalg.qr(m)[0] if input_dim >= frame_dim else np.linalg.qr(m.T)[0].T
            w[f"encoder.b_{name}"] = np.zeros(frame_dim)
        np.random.seed(seed)
        w["selector.W_task"] = np.random.randn(task_dim, 5) * 0.1
        w["selector.b_task"] = np.zeros(5)
        np.random.seed(seed)
        w["projector.W_topology"] = np.eye(frame_dim) + np.random.randn(frame_dim, frame_dim) * 0.01
        np.random.seed(seed)
        for name in ("W_query", "W_key", "W_value", "W_output"):
            w[f"attention.{name}"] = np.random.randn(frame_dim, frame_dim) * 0.1
        w["attention.b_output"] = np.zeros(frame_dim)
        np.random.seed(seed)
        w["refiner.W1"] = np.random.randn(frame_dim, hidden_dim) * np.sqrt(2.0 / frame_dim)
        w["refiner.b1"] = np.zeros(hidden_dim)
        w["refiner.W2"] = np.random.randn(hidden_dim, frame_dim) * np.sqrt(2.0 / hidden_dim)
        w["refiner.b2"] = np.zeros(frame_dim)
        return w
    finally:
        np.random.set_state(saved)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - np.max(v, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def encode(w: dict, x: np.ndarray, adj: np.ndarray | None) -> dict[str, np.ndarray]:
    """x [I] -> {frame name: [F]}."""
    z = {name: x @ w[f"encoder.W_{name}"] + w[f"encoder.b_{name}"] for name in NAMES}
    f = z["semantic"].shape[0]
    h = f // 2
    structural = [np.sin(z["structural"][:h]), np.cos(z["structural"][h:2 * h])]
    if f % 2 == 1:
        structural.append(z["structural"][-1:])
    g = z["graph"]
    if adj is not None:
        g = (adj / (np.sum(adj, axis=-1, keepdims=True) + 1e-8)) @ g
    return {
        "semantic": np.tanh(z["semantic"]),
        "structural": np.concatenate(structural),
        "causal": np.tanh(np.concatenate([[z["causal"][0]], np.diff(z["causal"])])),
        "relational": z["relational"] / (np.linalg.norm(z["relational"]) + 1e-8),
        "graph": np.tanh(g),
    }


def forward(w: dict, x: np.ndarray, t: np.ndarray, adj: np.ndarray | None = None, *,
            safe_bounds=(-10.0, 10.0), graph_propagation: bool = False) -> dict:
    """One sample: x [I], t [T], adj [F, F] or None -> every intermediate (final_output [F], attention [5, 5], ...).

    graph_propagation=False is the original exactly (the adjacency only touches the graph frame);
    True also smooths every frame with D^-1/2 (A + I) D^-1/2 before the topology projection.
    """
    frames = encode(w, x, adj)
    weights = _softmax(t @ w["selector.W_task"] + w["selector.b_task"])
    weighted = {name: frames[name] * weights[i] for i, name in enumerate(NAMES)}
    w_top = w["projector.W_topology"]
    if adj is not None and graph_propagation:
        a = adj + np.eye(adj.shape[0])
        deg = a.sum(axis=1)
        inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
        norm_adj = inv[:, None] * a * inv[None, :]
        aligned = {name: (norm_adj @ f) @ w_top for name, f in weighted.items()}
    else:
        aligned = {name: f @ w_top for name, f in weighted.items()}
    s = np.stack([aligned[name] for name in NAMES])  # [5, F]
    q, k, v = s @ w["attention.W_query"], s @ w["attention.W_key"], s @ w["attention.W_value"]
    attn = _softmax(q @ k.T / np.sqrt(s.shape[1]))  # [5, 5]
    attention_output = np.mean(attn @ v, axis=0) @ w["attention.W_output"] + w["attention.b_output"]
    hidden = np.tanh(attention_output @ w["refiner.W1"] + w["refiner.b1"])
    refinement = np.tanh(hidden @ w["refiner.W2"] + w["refiner.b2"])
    refined = np.clip(0.5 * np.tanh(attention_output) + 0.5 * refinement, -1.0, 1.0)
    low, high = safe_bounds
    final = np.clip(np.nan_to_num(refined, nan=0.0, posinf=high, neginf=low), low, high)
    return {"frames": frames, "weighted_frames": weighted, "aligned_frames": aligned, "task_weights": weights,
            "attention": attn, "attention_output": attention_output, "refined_output": refined,
            "final_output": final}


def batch_forward(w: dict, xs: np.ndarray, ts: np.ndarray, adj: np.ndarray | None = None, **kw) -> np.ndarray:
    """The original's approach to a batch: a Python loop of single samples. xs [B, I], ts [B, T] -> [B, F]."""
    return np.stack([forward(w, x, t, adj, **kw)["final_output"] for x, t in zip(xs, ts)])


def analyze_vector(x: np.ndarray, name: str, n: int) -> dict:
    """The original's per-vector statistics, sparsity, distribution and samples (n = min(5, F))."""
    mean, std = np.mean(x), np.std(x)
    z = (x - mean) / std if std != 0 else None
    order = np.argsort(np.abs(x), kind="stable")[-n:][::-1]
    return {
        "name": name, "shape": x.shape,
        "statistics": {"mean": float(mean), "std": float(std), "min": float(np.min(x)), "max": float(np.max(x)),
                       "median": float(np.median(x)), "norm_l1": float(np.sum(np.abs(x))),
                       "norm_l2": float(np.sqrt(np.sum(x * x))), "norm_inf": float(np.max(np.abs(x)))},
        "sparsity": {"zero_ratio": float(np.mean(x == 0.0)), "near_zero_ratio": float(np.mean(np.abs(x) < 0.01)),
                     "active_ratio": float(np.mean(np.abs(x) >= 0.1))},
        "distribution": {"positive_ratio": float(np.mean(x > 0)), "negative_ratio": float(np.mean(x < 0)),
                         "skewness": 0.0 if z is None else float(np.mean(z ** 3)),
                         "kurtosis": 0.0 if z is None else float(np.mean(z ** 4) - 3.0)},
        "samples": {"first_n": x[:n].tolist(), "last_n": x[-n:].tolist(), "top_magnitude_indices": order.tolist(),
                    "top_magnitude_values": x[order].tolist()},
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))


def analyze_frames(frames: dict[str, np.ndarray], n: int) -> dict:
    out = {name: analyze_vector(frames[name], f"{name}_frame", n) for name in NAMES}
    sims = {f"{a}_vs_{b}": _cosine(frames[a], frames[b]) for i, a in enumerate(NAMES) for b in NAMES[i + 1:]}
    mean = float(np.mean(list(sims.values())))
    out["comparison"] = {"pairwise_similarities": sims, "mean_similarity": mean, "diversity": 1.0 - mean}
    return out


def trace(x: np.ndarray, r: dict) -> dict:
    """The original's reasoning-trace dictionary for one sample, from `forward`'s intermediates."""
    n = min(5, r["final_output"].shape[0])
    a, ref, fin = r["attention_output"], r["refined_output"], r["final_output"]

    def change(new, old):
        return float(np.linalg.norm(new - old) / (np.linalg.norm(old) + 1e-8))

    return {
        "input": analyze_vector(x, "input", n),
        "encoded_frames": analyze_frames(r["frames"], n),
        "weighted_frames": analyze_frames(r["weighted_frames"], n),
        "attention_output": analyze_vector(a, "attention", n),
        "refined_output": analyze_vector(ref, "refined", n),
        "final_output": analyze_vector(fin, "final", n),
        "task_weights": {name: float(r["task_weights"][i]) for i, name in enumerate(NAMES)},
        "transformations": {"attention_to_refined_change": change(ref, a), "refined_to_final_change": change(fin, ref),
                            "attention_to_final_change": change(fin, a)},
    }
