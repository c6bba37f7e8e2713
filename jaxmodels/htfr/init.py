"""Initialisers (originals.md section 5.5): random hypertensors and the k-means ("whitepaper") field.

Both return per-tensor arrays as a dict for `make_state`: normals [M, D], deltas, dneg, dpos, taus [M],
controls [M, O, 3], interp [M] (ids), ref_radius [M].
"""

from __future__ import annotations

import numpy as np

from jaxmodels_kernels.seeding import as_generator


def random_tensors(m: int, d_in: int, d_out: int, *, seed, tau: float = 1.0, reference_radius: float = 5.0,
                   interpolation_probs=None) -> dict[str, np.ndarray]:
    """M random tensors, drawn per tensor in the original's order: n ~ N(0, I) (normalised), delta ~ N(0, 0.5^2),
    span ~ U(0.1, 1), C ~ N(0, 0.05^2) [O, 3]; then one interpolation per tensor from interpolation_probs
    (over INTERPOLATIONS; default lerp only, ids 0)."""
    if m < 1 or d_in < 1 or d_out < 1:
        raise ValueError(f"random_tensors: M, D and O must be >= 1, got M={m}, D={d_in}, O={d_out}")
    rng = as_generator(seed, "random_tensors")
    normals = np.empty((m, d_in), np.float32)
    deltas, spans = np.empty(m, np.float32), np.empty(m, np.float32)
    controls = np.empty((m, d_out, 3), np.float32)
    for i in range(m):
        n = rng.normal(size=d_in)
        normals[i] = n / np.linalg.norm(n)
        deltas[i] = rng.normal(scale=0.5)
        spans[i] = rng.uniform(0.1, 1.0)
        controls[i] = rng.normal(scale=0.05, size=(d_out, 3))
    probs = [1.0, 0, 0, 0, 0] if interpolation_probs is None else interpolation_probs
    interp = rng.choice(len(probs), size=m, p=np.asarray(probs) / np.sum(probs)).astype(np.int32)
    return {"normals": normals, "deltas": deltas, "dneg": -spans, "dpos": spans, "taus": np.full(m, tau, np.float32),
            "controls": controls, "interp": interp, "ref_radius": np.full(m, reference_radius, np.float32)}


def kmeans(data: np.ndarray, k: int, *, seed, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on data [N, D]: (centres [k, D], labels [N]). Initial centres are k distinct samples;
    an empty cluster is reseeded to a random sample."""
    data = np.asarray(data, np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"kmeans: data must have shape [N, D] with N >= 1, got {data.shape}")
    if not 1 <= k <= data.shape[0]:
        raise ValueError(f"kmeans: k must be in [1, N = {data.shape[0]}], got {k}")
    rng = as_generator(seed, "kmeans")
    centres = data[rng.choice(data.shape[0], size=k, replace=False)].copy()
    labels = np.zeros(data.shape[0], np.int64)
    for _ in range(iters):
        d2 = (data * data).sum(1)[:, None] - 2 * data @ centres.T + (centres * centres).sum(1)[None, :]
        labels = np.argmin(d2, axis=1)
        for c in range(k):
            members = data[labels == c]
            centres[c] = members.mean(0) if len(members) else data[rng.integers(data.shape[0])]
    return centres, labels


def kmeans_tensors(data: np.ndarray, outputs: np.ndarray, k: int, *, seed, iters: int = 20, tau: float = 1.0,
                   reference_radius: float = 5.0) -> dict[str, np.ndarray]:
    """One tensor per k-means cluster of data [N, D] with outputs [N, O]: normal = first principal direction of
    the centred cluster, delta = -normal . mean, band = +-(std of the projections + 1e-6), C = [mu, mu, mu] with
    mu the cluster's mean output. Interpolation lerp for all."""
    data = np.asarray(data, np.float64)
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[0] != data.shape[0]:
        raise ValueError(f"kmeans_tensors: data has {data.shape[0]} rows but outputs has {outputs.shape[0]}")
    centres, labels = kmeans(data, k, seed=seed, iters=iters)
    m, d_in = k, data.shape[1]
    normals = np.zeros((m, d_in), np.float32)
    deltas, spans = np.zeros(m, np.float32), np.zeros(m, np.float32)
    controls = np.zeros((m, outputs.shape[1], 3), np.float32)
    for c in range(m):
        pts = data[labels == c]
        if len(pts) == 0:
            pts = centres[c][None]
        mean = pts.mean(0)
        _, _, vt = np.linalg.svd(pts - mean, full_matrices=True)
        direction = vt[0]
        normals[c] = direction
        deltas[c] = -direction @ mean
        spans[c] = np.std((pts - mean) @ direction) + 1e-6
        mu = outputs[labels == c].mean(0) if np.any(labels == c) else outputs.mean(0)
        controls[c] = np.repeat(mu[:, None], 3, axis=1)
    return {"normals": normals, "deltas": deltas, "dneg": -spans, "dpos": spans, "taus": np.full(m, tau, np.float32),
            "controls": controls, "interp": np.zeros(m, np.int32),
            "ref_radius": np.full(m, reference_radius, np.float32)}
