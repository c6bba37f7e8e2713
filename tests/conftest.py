"""Shared test settings: float32 matmuls at full precision so parity tolerances are meaningful."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The CLIs run in-process turn on the persistent compilation cache; tests keep it off unless they set it.
os.environ.setdefault("JAXMODELS_COMPILATION_CACHE", "off")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
