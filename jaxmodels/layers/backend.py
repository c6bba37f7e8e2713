"""Which implementation of the decoder layers runs: "tuned" (for XLA:CPU) or "plain" (any backend).

"auto" is resolved when a layer is called, i.e. at trace time under `jax.jit`: "tuned" when
`jax.default_backend()` is "cpu", else "plain"; the environment variable JAXMODELS_LAYERS (auto | tuned |
plain) changes what "auto" means. The two paths and why both exist: docs/layers.md.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

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
# Dot precision on XLA:CPU (docs/precision.md). XLA:CPU hands float32 dots to YNNPACK, which accumulates each
# output over blocks of 512 terms; MKL (PyTorch) and XLA's Eigen path use blocks of 256, so their rounding error
# is about 1.4x smaller once K > 256. On SmolLM2-135M that made our float32 prefill logits up to 2x less accurate
# than transformers' float32 against float64. Inference entry points (generation, streaming, verification)
# therefore compile a float32 computation on the CPU with YNNPACK fusions off: as accurate as transformers, decode
# steps as fast, a long prefill slower. A bfloat16 computation keeps YNNPACK: its operands' rounding (8 bits)
# dwarfs the accumulation order's, and without YNNPACK its dots are widened to float32 and run on Eigen at half
# the speed. Training keeps the default (YNNPACK).

DOTS = ("auto", "precise", "fast")
DOTS_ENV_VAR = "JAXMODELS_CPU_DOTS"
PRECISE_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def cpu_dots() -> str:
    """"auto" (the default), "precise" or "fast", from the environment variable JAXMODELS_CPU_DOTS."""
    dots = os.environ.get(DOTS_ENV_VAR) or "auto"
    if dots not in DOTS:
        raise ValueError(f"{DOTS_ENV_VAR}={dots!r} is not a dot mode; choose one of {', '.join(map(repr, DOTS))}")
    return dots


_WIDE = frozenset(map(jnp.dtype, ("float32", "float64")))
_NARROW = frozenset(map(jnp.dtype, ("bfloat16", "float16")))


def low_precision(*args) -> bool:
    """Whether the floating-point arrays of at least one dimension in `args` are all 16-bit (bfloat16, float16),
    and there is one: a model state computing in bfloat16. Scalars (a sampling temperature) do not count."""
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(args) if getattr(leaf, "ndim", 0)}
    return bool(dtypes & _NARROW) and not dtypes & _WIDE


def inference_compiler_options(*args) -> dict[str, str]:
    """XLA compiler options for an inference computation on `args` (its arguments, e.g. the model state) on the
    default backend. On the CPU, JAXMODELS_CPU_DOTS "auto": the precise dots unless `low_precision(*args)` (no
    arguments: precise); "precise" or "fast" for every computation. Nothing elsewhere (GPU/TPU libraries are
    unaffected)."""
    if jax.default_backend() != "cpu":
        return {}
    dots = cpu_dots()
    if dots == "auto":
        dots = "fast" if low_precision(*args) else "precise"
    return dict(PRECISE_CPU_OPTIONS) if dots == "precise" else {}


class inference_jit:
    """`jax.jit` for inference: compiled with `inference_compiler_options(args)` for the backend, environment
    and arguments of the call (one jitted function per distinct options). Use as `inference_jit(fun,
    **jit_kwargs)` or as a decorator through functools.partial."""

    def __init__(self, fun, **jit_kwargs):
        self.fun, self.jit_kwargs, self._jitted = fun, jit_kwargs, {}
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)

    def jitted(self, *args, **kwargs):
        """The jax.jit object a call with these arguments uses (none: a float32 call's)."""
        options = inference_compiler_options(*args, *kwargs.values())
        key = tuple(sorted(options.items()))
        if key not in self._jitted:
            self._jitted[key] = jax.jit(self.fun, compiler_options=options or None, **self.jit_kwargs)
        return self._jitted[key]

    def __call__(self, *args, **kwargs):
        return self.jitted(*args, **kwargs)(*args, **kwargs)
