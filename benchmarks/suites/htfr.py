"""`python -m benchmarks htfr [--quick]`: the jitted HTFR field against a per-sample NumPy implementation.

1. The original's two stage shapes (stage 1: M=8192, D=16384, O=1024; stage 2: M=16384, D=4096, O=4097 with
   cross-entropy labels; top_k 64, train_top_k 1024): training samples/s in sequential mode (exact rule) and
   batched mode, prediction samples/s, against `ReferenceField` (the original's per-sample loops) on the same
   initial state; sequential predictions are compared with the reference's, sample by sample.
2. A sweep over M at D=4096, O=1024.
3. Real data bundled with scikit-learn (diabetes regression, digits classification): HTFR estimators next to
   k-nearest-neighbours, ridge / logistic regression and gradient boosting, accuracy and time.
Inputs are standard normal (what the projection stack's block RMSNorm produces); tensors are drawn as the
original's `random_hypertensor`, interpolations uniformly, all seeded.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from jaxmodels_benchmarks.charts import ratio_figure
from jaxmodels_benchmarks.harness import time_fn, write_results
from jaxmodels.htfr import HTFRClassifier, HTFRConfig, HTFRModel, HTFRRegressor, ReferenceField

COLUMNS = ["part", "case", "impl", "samples_per_s", "ms_per_sample", "speedup", "check"]
TARGET_SPEEDUP = 100.0  # of training over the per-sample NumPy rate


def _field(m, d, o, cfg, seed=0):
    return HTFRModel.random(m, d, o, cfg, seed=seed)


def bench_shape(name, m, d, o, loss, *, n_train, n_ref, rows, results, sweep=False):
    cfg = HTFRConfig()  # the original's defaults: top_k 64, train_top_k 1024, eta 0.05, eta_g 0.005, ...
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_train + cfg.chunk_size, d), dtype=np.float32)
    y = (rng.integers(0, o, len(x)) if loss == "logits_ce" else rng.standard_normal((len(x), o), dtype=np.float32))
    t0 = time.perf_counter()
    model = _field(m, d, o, cfg)
    init_s = time.perf_counter() - t0
    # reference as the original (float32 anchor scan): the speed baseline
    ref = ReferenceField(model.state, cfg)
    t_ref = []
    for i in range(n_ref):
        t0 = time.perf_counter()
        ref.predict_and_update(x[i], y[i], loss)
        t_ref.append(time.perf_counter() - t0)
    t_ref_pred = time_fn(lambda: ref.predict(x[0]), warmup=0, runs=max(1, n_ref))["median"]
    del ref
    gc.collect()
    # the same rule with a float64 anchor scan (no near-tie candidate swaps): the equality check
    ref = ReferenceField(model.state, cfg, anchor_dtype=np.float64)
    ref_pred, ref_loss = zip(*(ref.predict_and_update(x[i], y[i], loss) for i in range(n_ref)))
    del ref
    gc.collect()

    # ours, sequential: the first chunk contains the reference's samples (and compiles)
    t0 = time.perf_counter()
    first, first_loss = model.predict_and_update(x[:cfg.chunk_size], y[:cfg.chunk_size], loss, return_losses=True)
    compile_s = time.perf_counter() - t0
    diff = np.abs(first[:n_ref] - np.array(ref_pred))
    scale = np.abs(np.array(ref_pred)).max()
    loss_rel = np.max(np.abs(first_loss[:n_ref] - np.array(ref_loss)) / np.maximum(np.abs(ref_loss), 1e-12))
    t0 = time.perf_counter()
    model.predict_and_update(x[cfg.chunk_size:], y[cfg.chunk_size:], loss)
    seq_s = (time.perf_counter() - t0) / n_train

    # ours, batched (same start state as the reference, a fresh field)
    del model
    gc.collect()
    model = _field(m, d, o, cfg)
    model.predict_and_update(x[:cfg.chunk_size], y[:cfg.chunk_size], loss, mode="batched")
    t0 = time.perf_counter()
    model.predict_and_update(x[cfg.chunk_size:], y[cfg.chunk_size:], loss, mode="batched")
    bat_s = (time.perf_counter() - t0) / n_train
    xb = x[:256]
    model.predict(xb)
    pred_s = time_fn(lambda: model.predict(xb), warmup=0, runs=3)["median"] / len(xb)
    del model
    gc.collect()

    ref_s = float(np.median(t_ref))
    case = f"M={m}, D={d}, O={o}, {loss}"
    check = (f"max |diff| {diff.max():.2e} (max |pred| {scale:.3g}), loss rel {loss_rel:.1e}, first {n_ref} samples "
             "vs the float64-scan reference")
    part = "sweep over M" if sweep else name
    rows += [
        {"part": part, "case": case, "impl": "numpy per-sample (train)", "samples_per_s": 1 / ref_s,
         "ms_per_sample": ref_s * 1e3, "speedup": 1.0, "check": f"median of {n_ref} samples"},
        {"part": part, "case": case, "impl": "jax sequential (train, exact)", "samples_per_s": 1 / seq_s,
         "ms_per_sample": seq_s * 1e3, "speedup": ref_s / seq_s, "check": check},
        {"part": part, "case": case, "impl": "jax batched (train)", "samples_per_s": 1 / bat_s,
         "ms_per_sample": bat_s * 1e3, "speedup": ref_s / bat_s, "check": f"chunks of {cfg.chunk_size}"},
        {"part": part, "case": case, "impl": "numpy per-sample (predict)", "samples_per_s": 1 / t_ref_pred,
         "ms_per_sample": t_ref_pred * 1e3, "speedup": 1.0, "check": f"top_k {cfg.top_k}"},
        {"part": part, "case": case, "impl": "jax predict (batch 256)", "samples_per_s": 1 / pred_s,
         "ms_per_sample": pred_s * 1e3, "speedup": t_ref_pred / pred_s, "check": ""}]
    results[f"{part}: {case}"] = {
        "init_s": init_s, "first_chunk_incl_compile_s": compile_s, "reference_train_s": t_ref,
        "reference_predict_s": t_ref_pred, "sequential_s_per_sample": seq_s, "batched_s_per_sample": bat_s,
        "predict_s_per_sample": pred_s, "max_abs_diff_vs_reference": float(diff.max()),
        "prediction_scale": float(scale), "max_rel_loss_diff": float(loss_rel), "n_train": n_train, "n_ref": n_ref}
    print(f"{case}: ref {1 / ref_s:.3g}/s, seq {1 / seq_s:.3g}/s ({ref_s / seq_s:.0f}x), batched {1 / bat_s:.3g}/s, "
          f"predict {1 / pred_s:.3g}/s vs {1 / t_ref_pred:.3g}/s; {check}", flush=True)


def bench_sklearn(quick: bool, rows: list, results: dict) -> None:
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    epochs = 3 if quick else 20
    tasks = {
        "diabetes (R^2)": (load_diabetes(return_X_y=True), {
            "kNN (k=10)": make_pipeline(StandardScaler(), KNeighborsRegressor(10)),
            "ridge": make_pipeline(StandardScaler(), Ridge(1.0)),
            "hist gradient boosting": HistGradientBoostingRegressor(random_state=0),
            "HTFR sequential": HTFRRegressor(16, top_k=16, train_top_k=16, eta=0.1, epochs=epochs, seed=0),
            "HTFR batched": HTFRRegressor(16, top_k=16, train_top_k=16, eta=0.1, epochs=epochs, mode="batched",
                                          chunk_size=32, seed=0)}),
        "digits (accuracy)": (load_digits(return_X_y=True), {
            "kNN (k=5)": make_pipeline(StandardScaler(), KNeighborsClassifier(5)),
            "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            "hist gradient boosting": HistGradientBoostingClassifier(random_state=0),
            "HTFR sequential": HTFRClassifier(128, top_k=16, train_top_k=32, eta=2.0, tau=0.3, epochs=epochs // 2 or 1,
                                              seed=0),
            "HTFR batched": HTFRClassifier(128, top_k=16, train_top_k=32, eta=2.0, tau=0.3, epochs=epochs // 2 or 1,
                                           mode="batched", chunk_size=32, seed=0)}),
    }
    for task, ((x, y), models) in tasks.items():
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0)
        for name, est in models.items():
            t0 = time.perf_counter()
            est.fit(xtr, ytr)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            score = est.score(xte, yte)
            pred_s = time.perf_counter() - t0
            rows.append({"part": "scikit-learn data", "case": task, "impl": name, "samples_per_s": len(xtr) / fit_s,
                         "ms_per_sample": fit_s / len(xtr) * 1e3, "speedup": "",
                         "check": f"score {score:.3f}; fit {fit_s:.2f} s, predict {pred_s * 1e3:.1f} ms"})
            results[f"sklearn {task} {name}"] = {"score": score, "fit_s": fit_s, "predict_s": pred_s}
            print(f"{task} {name}: {score:.3f} ({fit_s:.2f} s)", flush=True)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks htfr", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small shapes and few samples")
    ap.add_argument("--only", choices=["defaults", "sweep", "sklearn"], action="append")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    results: dict = {"quick": args.quick}
    want = lambda part: not args.only or part in args.only  # noqa: E731
    if want("defaults"):
        shapes = ([("stage-1 shape (small)", 512, 1024, 64, "mse"), ("stage-2 shape (small)", 1024, 512, 257,
                                                                      "logits_ce")] if args.quick else
                  [("stage 1 (original defaults)", 8192, 16384, 1024, "mse"),
                   ("stage 2 (original defaults)", 16384, 4096, 4097, "logits_ce")])
        for name, m, d, o, loss in shapes:
            bench_shape(name, m, d, o, loss, n_train=64 if args.quick else 128, n_ref=2 if args.quick else 3,
                        rows=rows, results=results)
    if want("sweep"):
        for m in ((256, 1024) if args.quick else (1024, 4096, 16384)):
            bench_shape("sweep", m, 512 if args.quick else 4096, 64 if args.quick else 1024, "mse",
                        n_train=64 if args.quick else 128, n_ref=2, rows=rows, results=results, sweep=True)
    if want("sklearn"):
        bench_sklearn(args.quick, rows, results)
    notes = ("speedup = NumPy per-sample time / JAX time on the same state (train: sequential or batched; predict: "
             "batched top_k prediction). 'jax sequential' is the exact online rule; check = its largest deviation "
             f"from the NumPy reference's predictions. Target: training >= {TARGET_SPEEDUP:g}x the per-sample NumPy rate. "
             "2 shared CPU cores; single timed passes of n_train samples after a compile chunk.")
    write_results("htfr" + ("-quick" if args.quick else ""), results, rows, notes=notes, columns=COLUMNS, chart=chart)


def chart(rows: list[dict], results: dict):
    """Every JAX row's speed-up over the per-sample NumPy reference of its shape (the reference rows are 1)."""
    timed = [r for r in rows if isinstance(r["speedup"], (int, float)) and not r["impl"].startswith("numpy")]
    return ratio_figure([f"{r['part'].split(' (')[0]}, {r['case'].split(',')[0]}: {r['impl']}" for r in timed],
                        [r["speedup"] for r in timed], title="HTFR, JAX against the original's per-sample NumPy",
                        xlabel="NumPy time / JAX time (higher is better)", log=True,
                        limits={f"target {TARGET_SPEEDUP:g}x (training)": TARGET_SPEEDUP})
