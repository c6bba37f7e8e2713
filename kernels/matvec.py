"""Skinny matrix products for CPU decoding (matvec.cc) as XLA custom calls: `matvec_kn`, `matvec_nk`.

y [M, N] float32 = x [M, K] times a weight in float32, bfloat16 or int8: `matvec_kn` for w [K, N] (a Linear
kernel), `matvec_nk` for w [N, K] (a tied LM head). An int8 weight comes with its scales, either one float32
per output channel (scale [N]) or one float16 per block of 32 weights along K, llama.cpp's Q8_0 (scale [K/32, N]
for "kn", [N, K/32] for "nk"); the products are dequantised in registers. Why they exist and what they
measured: docs/layers.md ("Decode kernels"), docs/quantization.md. `reference_matvec` is the plain formulation.

The C++ source is compiled on first use with the machine's C++ compiler (-O3 -march=native) into
`$XDG_CACHE_HOME/jaxmodels/kernels` (or ~/.cache/...), one library per source, compiler and jaxlib version,
written atomically; `available()` says False (and the layers keep XLA's dots) when there is no compiler, the
build fails, the backend is not the CPU, or JAXMODELS_DECODE_KERNELS=off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("matvec.cc")
ENV_VAR = "JAXMODELS_DECODE_KERNELS"
WEIGHT_DTYPES = {"float32": "f32", "bfloat16": "bf16", "int8": "s8"}
BLOCK = 32  # weights per float16 block scale (Q8_0)
_TARGETS = [f"jm_matvec_{layout}_{t}" for layout in ("kn", "nk") for t in (*WEIGHT_DTYPES.values(), "s8_b32")]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxmodels" / "kernels"


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _build(compiler: str) -> Path:
    """Compiles matvec.cc (once per source, compiler, jaxlib and machine) and returns the library's path."""
    flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno",
             "-mprefer-vector-width=512"]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *flags, importlib.metadata.version("jaxlib"), _cpu()]).encode())
    key = key.hexdigest()[:16]
    out = _cache_dir() / f"matvec-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / out.name
        subprocess.run([compiler, *flags, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(built)],
                       capture_output=True, text=True, check=True)
        os.replace(built, out)  # atomic: a concurrent build writes the same bytes
    return out


@functools.cache
def _load() -> bool:
    compiler = _compiler()
    if compiler is None:
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        warnings.warn(f"the decode kernels did not build ({detail.strip()[:500]}); XLA's dots are used instead",
                      RuntimeWarning, stacklevel=3)
        return False
    for name in _TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    return True


def available() -> bool:
    """True when the kernels can run here: the CPU backend, not switched off, and built."""
    if (os.environ.get(ENV_VAR) or "on") == "off" or jax.default_backend() != "cpu":
        return False
    return _load()


def _target(layout: str, w: jax.Array, scale: jax.Array | None) -> str:
    """The kernel for this weight and scale, or an error naming what does not fit."""
    name = WEIGHT_DTYPES.get(jnp.dtype(w.dtype).name)
    if name is None:
        raise TypeError(f"matvec_{layout}: weights of dtype {w.dtype} are not supported; expected one of "
                        f"{', '.join(WEIGHT_DTYPES)}")
    if (name == "s8") != (scale is not None):
        raise ValueError(f"matvec_{layout}: int8 weights need a scale and other weights take none")
    if scale is None or scale.ndim == 1:
        n = w.shape[1] if layout == "kn" else w.shape[0]
        if scale is not None and scale.shape != (n,):
            raise ValueError(f"matvec_{layout}: a scale per output channel has shape ({n},), got {scale.shape}")
        return name
    k, n = w.shape if layout == "kn" else w.shape[::-1]
    blocks = (k // BLOCK, n) if layout == "kn" else (n, k // BLOCK)
    if k % BLOCK or scale.shape != blocks:
        raise ValueError(f"matvec_{layout}: block scales of w {w.shape} have shape "
                         f"{'[K/32, N]' if layout == 'kn' else '[N, K/32]'} with K a multiple of {BLOCK}, "
                         f"got {scale.shape}")
    if scale.dtype != jnp.float16:
        raise TypeError(f"matvec_{layout}: block scales are float16 (Q8_0's), got {scale.dtype}")
    return "s8_b32"


def _call(layout: str, x: jax.Array, w: jax.Array, scale: jax.Array | None) -> jax.Array:
    if x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"matvec_{layout}: expected x [M, K] and a 2-D w, got {x.shape} and {w.shape}")
    name = _target(layout, w, scale)
    if not _load():
        raise RuntimeError("the decode kernels are not built on this machine (see the warning); check available()")
    n = w.shape[1] if layout == "kn" else w.shape[0]
    if scale is None:
        args = (x.astype(jnp.float32), w)
    else:
        args = (x.astype(jnp.float32), w, scale if name == "s8_b32" else scale.astype(jnp.float32))
    out = jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32)
    return jax.ffi.ffi_call(f"jm_matvec_{layout}_{name}", out, vmap_method="sequential")(*args)


def matvec_kn(x: jax.Array, w: jax.Array, scale: jax.Array | None = None) -> jax.Array:
    """x [M, K] @ w [K, N] -> [M, N] float32; int8 w times scale [N] or block scales [K/32, N] (float16)."""
    return _call("kn", x, w, scale)


def matvec_nk(x: jax.Array, w: jax.Array, scale: jax.Array | None = None) -> jax.Array:
    """x [M, K] @ w[N, K].T -> [M, N] float32; int8 w times scale [N] or block scales [N, K/32] (float16)."""
    return _call("nk", x, w, scale)


def reference_matvec(x: np.ndarray, w: np.ndarray, scale: np.ndarray | None = None, *, layout: str) -> np.ndarray:
    """The same product in float64 NumPy (w in the given layout, block scales expanded over their 32 weights),
    for tests."""
    w64 = np.asarray(jnp.asarray(w).astype(jnp.float32), np.float64)
    w64 = w64 if layout == "kn" else w64.T  # [K, N]
    if scale is not None and np.ndim(scale) == 2:
        blocks = np.asarray(scale, np.float64)
        w64 = w64 * np.repeat(blocks if layout == "kn" else blocks.T, BLOCK, axis=0)
        scale = None
    y = np.asarray(x, np.float64) @ w64
    return y if scale is None else y * np.asarray(scale, np.float64)
