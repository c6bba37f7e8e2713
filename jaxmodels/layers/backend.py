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
