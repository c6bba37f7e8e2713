"""`python -m benchmarks kernels [--quick]`: FWHT, CountSketch, SRHT and nearest-neighbour search, side by side.

FWHT: ns per element for rows of 2^10..2^16 (numba in place and with a copy, jitted JAX, the per-stage NumPy
reference) against the physical floor, one read plus one write of the data (`np.copyto` into a preallocated
array). CountSketch: input GB/s of the numba kernel, the jitted segment sum and the original's Python loop over
input columns. kNN: faiss Flat / HNSW / IVF and the exact jitted top_k against a NumPy scan, with recall, and the
cost of updating rows in place versus rebuilding the index (what the original did after every training step).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxmodels_benchmarks.charts import figure, ratio_bars
from jaxmodels_benchmarks.harness import time_alternating, time_fn, write_results
from jaxmodels_kernels.countsketch import apply_count_sketch_host, apply_count_sketch_jax, make_count_sketch
from jaxmodels_kernels.fwht import fwht_host, fwht_jax, reference_fwht
from jaxmodels_kernels.index import FaissIndex
from jaxmodels_kernels.srht import apply_block_srht_host, apply_block_srht_jax, make_block_srht

COLUMNS = ["benchmark", "case", "impl", "median_ms", "figure", "unit", "best", "vs_baseline"]
FWHT_TARGET_NS = 3.0  # per element, numba, rows of 2^10..2^16


def _original_count_sketch(x, params):
    """The original's apply_count_sketch: a Python loop over input columns."""
    y = np.zeros((x.shape[0], params.output_dim), np.float32)
    for j in range(params.input_dim):
        y[:, params.bucket_indices[j]] += params.signs[j] * x[:, j]
    return y


def bench_fwht(quick: bool, rows: list, results: dict) -> None:
    total = 1 << (20 if quick else 22)
    for lp in ((10, 12) if quick else (10, 12, 14, 16)):
        p = 1 << lp
        x = np.random.default_rng(0).standard_normal((total // p, p)).astype(np.float32)
        # repeated in-place transforms grow values by sqrt(P) per call: start tiny so 9 calls stay finite
        work, dst, xj = x * np.float32(1e-20), np.empty_like(x), jnp.asarray(x)
        f = jax.jit(fwht_jax)
        t = time_alternating({"floor (copy)": lambda: np.copyto(dst, x),
                              "numba in place": lambda: fwht_host(work, inplace=True),
                              "numba (copy)": lambda: fwht_host(x), "jax jit": lambda: f(xj),
                              "numpy reference": lambda: reference_fwht(x)}, warmup=2, runs=7)
        base = t["numpy reference"]["median"]
        for name, r in t.items():
            ns = r["median"] / x.size * 1e9
            rows.append({"benchmark": "fwht", "case": f"P=2^{lp}, {x.shape[0]} rows", "impl": name,
                         "median_ms": r["median"] * 1e3, "figure": ns, "unit": "ns/element",
                         "best": r["min"] / x.size * 1e9, "vs_baseline": base / r["median"]})
        results[f"fwht_2^{lp}"] = {k: {"median_ns": v["median"] / x.size * 1e9, "min_ns": v["min"] / x.size * 1e9}
                                   for k, v in t.items()}


def bench_count_sketch(quick: bool, rows: list, results: dict) -> None:
    d_in, d_out, b = (8192, 2048, 8) if quick else (90368, 32768, 32)
    params = make_count_sketch(d_in, d_out, seed=0)
    x = np.random.default_rng(0).standard_normal((b, d_in)).astype(np.float32)
    xj = jnp.asarray(x)
    f = jax.jit(lambda v: apply_count_sketch_jax(v, params))
    assert np.allclose(apply_count_sketch_host(x, params), np.asarray(f(xj)), atol=1e-4)
    t = time_alternating({"numba": lambda: apply_count_sketch_host(x, params), "jax jit": lambda: f(xj)})
    t["original python loop"] = time_fn(lambda: _original_count_sketch(x, params), warmup=0, runs=1 if not quick else 2)
    base = t["original python loop"]["median"]
    for name, r in t.items():
        rows.append({"benchmark": "countsketch", "case": f"{d_in}->{d_out}, B={b}", "impl": name,
                     "median_ms": r["median"] * 1e3, "figure": x.nbytes / r["median"] / 1e9, "unit": "GB/s in",
                     "vs_baseline": base / r["median"]})
    results["countsketch_GBps"] = {k: x.nbytes / v["median"] / 1e9 for k, v in t.items()}


def bench_srht(quick: bool, rows: list, results: dict) -> None:
    d_in, d_out, b = (2048, 1024, 8) if quick else (32768, 16384, 32)
    params = make_block_srht(d_in, d_out, 256, seed=0)
    x = np.random.default_rng(0).standard_normal((b, d_in)).astype(np.float32)
    xj = jnp.asarray(x)
    f = jax.jit(lambda v: apply_block_srht_jax(v, params))
    err = np.abs(apply_block_srht_host(x, params) - np.asarray(f(xj))).max()
    t = time_alternating({"numba host": lambda: apply_block_srht_host(x, params), "jax jit": lambda: f(xj)})
    for name, r in t.items():
        rows.append({"benchmark": "srht", "case": f"{d_in}->{d_out}, B={b}", "impl": name,
                     "median_ms": r["median"] * 1e3, "figure": r["median"] / (b * params.padded_dim) * 1e9,
                     "unit": "ns/padded element", "vs_baseline": t["jax jit"]["median"] / r["median"]})
    results["srht"] = {"host_vs_jax_max_abs_diff": float(err), **{k: v["median"] for k, v in t.items()}}


def bench_knn(quick: bool, rows: list, results: dict) -> None:
    n, d, b, k = (2048, 64, 16, 32) if quick else (8192, 1024, 64, 256)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((b, d)).astype(np.float32)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ data.T + (data * data).sum(1)[None]
    truth = np.argsort(d2, axis=1)[:, :k]
    builds, indexes = {}, {}
    for kind in ("flat", "exact", "hnsw", "ivf"):
        t0 = time.perf_counter()
        index = FaissIndex(d, kind, nlist=64, nprobe=8, ef_search=max(64, k))
        index.add(data)
        if kind == "exact":
            index.search(q, k)  # compiles
        builds[kind], indexes[kind] = time.perf_counter() - t0, index

    def numpy_scan():
        dd = (q * q).sum(1)[:, None] - 2 * q @ data.T + (data * data).sum(1)[None]
        part = np.argpartition(dd, k - 1, axis=1)[:, :k]
        return np.take_along_axis(part, np.argsort(np.take_along_axis(dd, part, 1), 1), 1)

    fns = {"numpy scan": numpy_scan, **{f"faiss {kind}" if kind != "exact" else "jax exact top_k":
                                        (lambda ix=ix: ix.search(q, k)) for kind, ix in indexes.items()}}
    t = time_alternating(fns, warmup=1, runs=5)
    base = t["numpy scan"]["median"]
    for name, r in t.items():
        ids = numpy_scan() if name == "numpy scan" else fns[name]()[1]
        recall = np.mean([len(set(a) & set(bb)) / k for a, bb in zip(ids, truth)])
        rows.append({"benchmark": "knn search", "case": f"N={n}, D={d}, B={b}, k={k}", "impl": name,
                     "median_ms": r["median"] * 1e3, "figure": recall, "unit": "recall@k",
                     "vs_baseline": base / r["median"]})
    upd = rng.standard_normal((n // 8, d)).astype(np.float32)
    ids = np.arange(n // 8) * 8
    for kind in ("flat", "hnsw", "exact"):
        ix = indexes[kind]
        t_upd = time_fn(lambda ix=ix: ix.update(ids, upd), warmup=0, runs=3)
        t_build = time_fn(lambda kind=kind: FaissIndex(d, kind).add(data), warmup=0, runs=1)
        rows.append({"benchmark": "index update", "case": f"{n // 8} of {n} rows", "impl": f"{kind}: update",
                     "median_ms": t_upd["median"] * 1e3, "figure": t_build["median"] / t_upd["median"],
                     "unit": "x faster than a full rebuild", "vs_baseline": ""})
        rows.append({"benchmark": "index update", "case": f"{n} rows", "impl": f"{kind}: full rebuild",
                     "median_ms": t_build["median"] * 1e3, "figure": "", "unit": "", "vs_baseline": ""})
    results["knn_build_s"] = builds


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks kernels", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    ap.add_argument("--only", choices=["fwht", "countsketch", "srht", "knn"], action="append")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    results: dict = {"quick": args.quick}
    for name, fn in (("fwht", bench_fwht), ("countsketch", bench_count_sketch), ("srht", bench_srht),
                     ("knn", bench_knn)):
        if not args.only or name in args.only:
            print(f"-- {name}", flush=True)
            fn(args.quick, rows, results)
    notes = (f"FWHT target: <= {FWHT_TARGET_NS:g} ns/element for rows of 2^10..2^16 (numba); 'figure' is the median, "
             "'best' the fastest run (least disturbed by other processes). 'floor (copy)' is one read plus one "
             "write of the data. vs_baseline = baseline time / this time (baseline: numpy reference, the original "
             "CountSketch loop, the NumPy kNN scan). 2 shared CPU cores: medians of interleaved runs.")
    write_results("kernels" + ("-quick" if args.quick else ""), results, rows, notes=notes, columns=COLUMNS,
                  chart=chart)


def chart(rows: list[dict], results: dict):
    """Left: FWHT time per element against the target; right: the other kernels against their baselines (the
    index updates against a full rebuild)."""
    fwht = [r for r in rows if r["benchmark"] == "fwht" and r["impl"] != "numpy reference"]
    timed = [r for r in rows if r["benchmark"] != "fwht" and isinstance(r["vs_baseline"], (int, float))]
    updates = [r for r in rows if r["benchmark"] == "index update" and isinstance(r["figure"], (int, float))]
    panels = [p for p, present in (("fwht", fwht), ("others", timed + updates)) if present]
    fig, axes = figure(len(panels), width=5.8, height=0.2 * max(len(fwht), len(timed + updates)) + 1.3)
    for ax, panel in zip(axes, panels):
        if panel == "fwht":
            ratio_bars(ax, [f"{r['case']}: {r['impl']}" for r in fwht], [r["figure"] for r in fwht],
                       xlabel="ns per element (lower is better)", better="lower", reference=None, unit=" ns",
                       limits={f"target {FWHT_TARGET_NS:g} ns (numba)": FWHT_TARGET_NS})
            ax.set_title("FWHT", fontsize=9)
        else:
            ratio_bars(ax, [f"{r['benchmark']} {r['case']}: {r['impl']}" for r in timed + updates],
                       [r["vs_baseline"] for r in timed] + [r["figure"] for r in updates], log=True,
                       xlabel="baseline time / this time (higher is better)")
            ax.set_title("Against the baselines", fontsize=9)
    fig.tight_layout()
    return fig
