"""Which implementation of the decoder layers runs: "tuned" (for XLA:CPU) or "plain" (any backend).

"auto" is resolved when a layer is called, i.e. at trace time under `jax.jit`: "tuned" when
`jax.default_backend()` is "cpu", else "plain"; the environment variable JAXMODELS_LAYERS (auto | tuned |
plain) changes what "auto" means. The two paths and why both exist: docs/layers.md.
"""

from __future__ import annotations

import os

import jax

LAYERS = ("auto", "tuned", "plain")
ENV_VAR = "JAXMODELS_LAYERS"


def check(layers: str, *, source: str = "layers") -> str:
    """Returns `layers` if it is one of LAYERS; raises naming `source` and the allowed values otherwise."""
    if layers not in LAYERS:
        raise ValueError(f"{source}={layers!r} is not a layer path; choose one of {', '.join(map(repr, LAYERS))}")
    return layers


def resolve(layers: str = "auto") -> str:
    """"tuned" or "plain" for a requested `layers`; an unset or empty JAXMODELS_LAYERS counts as "auto"."""
    if check(layers) != "auto":
        return layers
    env = check(os.environ.get(ENV_VAR) or "auto", source=ENV_VAR)
    if env != "auto":
        return env
    return "tuned" if jax.default_backend() == "cpu" else "plain"


# ---------------------------------------------------------------------------------------------------------------
# Dot precision on XLA:CPU (docs/layers.md, "Precision"). XLA:CPU hands float32 dots to YNNPACK, which
# accumulates each output over blocks of 512 terms; MKL (PyTorch) and XLA's Eigen path use blocks of 256, so
# their rounding error is about 1.4x smaller once K > 256. On SmolLM2-135M that made our prefill logits up to 2x
# less accurate than transformers' float32 against float64. Inference entry points (generation, streaming,
# verification) therefore compile on the CPU with YNNPACK fusions off: as accurate as transformers, decode steps
# (matrix-vector products) as fast, a long prefill about 1.5x slower. Training keeps the default (YNNPACK).

DOTS = ("precise", "fast")
DOTS_ENV_VAR = "JAXMODELS_CPU_DOTS"
PRECISE_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def cpu_dots() -> str:
    """"precise" (the default) or "fast", from the environment variable JAXMODELS_CPU_DOTS."""
    dots = os.environ.get(DOTS_ENV_VAR) or "precise"
    if dots not in DOTS:
        raise ValueError(f"{DOTS_ENV_VAR}={dots!r} is not a dot mode; choose one of {', '.join(map(repr, DOTS))}")
    return dots


def inference_compiler_options() -> dict[str, str]:
    """XLA compiler options for an inference computation on the default backend: the precise CPU dots there,
    nothing elsewhere (GPU/TPU libraries are unaffected)."""
    return dict(PRECISE_CPU_OPTIONS) if jax.default_backend() == "cpu" and cpu_dots() == "precise" else {}


class inference_jit:
    """`jax.jit` for inference: compiled with `inference_compiler_options()` for the backend and environment in
    force at call time (one jitted function per distinct options). Use as `inference_jit(fun, **jit_kwargs)`
    or as a decorator through functools.partial."""

    def __init__(self, fun, **jit_kwargs):
        self.fun, self.jit_kwargs, self._jitted = fun, jit_kwargs, {}
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)

    def jitted(self):
        """The jax.jit object the next call uses."""
        options = inference_compiler_options()
        key = tuple(sorted(options.items()))
        if key not in self._jitted:
            self._jitted[key] = jax.jit(self.fun, compiler_options=options or None, **self.jit_kwargs)
        return self._jitted[key]

    def __call__(self, *args, **kwargs):
        return self.jitted()(*args, **kwargs)
