"""`--verify`: run a Hugging Face directory in PyTorch and our model in JAX on the same inputs, compare outputs.

The PyTorch side is loaded as a transformers user would: the class named by `architectures` in config.json,
from the directory's own modeling code when config.json has an `auto_map` (trust_remote_code), else from the
family's twin module, else from transformers. Inputs and the compared output come from the family record.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from jaxmodels import family as families
from jaxmodels.pretrained import from_pretrained, model_dir, read_config


class VerifyError(RuntimeError):
    """The converted checkpoint does not reproduce the source's outputs."""


def transformers_class(hf_dir: str | os.PathLike, family: families.Family) -> type:
    """The PyTorch class of a Hugging Face directory (see the module docstring)."""
    cfg = read_config(hf_dir)
    arch = (cfg.get("architectures") or [None])[0]
    if arch is None:
        raise ValueError(f"{Path(hf_dir) / 'config.json'}: no architectures entry; cannot tell which model to run")
    for module in sorted({ref.rsplit(".", 1)[0] for ref in (cfg.get("auto_map") or {}).values()}):
        try:
            return get_class_from_dynamic_module(f"{module}.{arch}", str(hf_dir))
        except AttributeError:
            continue
    if family.twin is not None and hasattr(twin := importlib.import_module(family.twin), arch):
        return getattr(twin, arch)
    if hasattr(transformers, arch):
        return getattr(transformers, arch)
    raise ValueError(f"{Path(hf_dir) / 'config.json'}: architectures names {arch!r}, which neither the "
                     f"directory's code nor transformers provides")


def max_difference(model, hf_dir: str | os.PathLike, *, seed: int = 0) -> tuple[float, int]:
    """-> (max |ours - theirs| of the family's verify output, number of values compared), both in float32."""
    family = families.family_of(model.config)
    theirs = transformers_class(hf_dir, family).from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    inputs = family.verify_inputs(model.config, np.random.default_rng(seed))
    with torch.no_grad():
        expected = getattr(theirs(**{k: torch.from_numpy(v) for k, v in inputs.items()}), family.verify_output)
    got = getattr(model(**{k: jnp.asarray(v) for k, v in inputs.items()}), family.verify_output)
    expected, got = expected.double().numpy(), np.asarray(got, np.float64)
    return float(np.max(np.abs(got - expected))), int(got.size)


def verify_dirs(hf_dir: str | os.PathLike, ours_dir: str | os.PathLike, *, tolerance: float | None = None,
                seed: int = 0) -> float:
    """Our directory (or training run) vs a Hugging Face one; prints the difference, raises past the tolerance
    (default: the family's)."""
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()
    model = from_pretrained(model_dir(ours_dir), dtype=jnp.float32)
    family = families.family_of(model.config)
    tolerance = family.verify_tolerance if tolerance is None else tolerance
    diff, count = max_difference(model, hf_dir, seed=seed)
    print(f"verify: max |{family.verify_output} difference| = {diff:.3g} over {count} values "
          f"(tolerance {tolerance:g})")
    if not diff <= tolerance:
        raise VerifyError(f"{family.verify_output} differ by {diff:.3g}, more than the tolerance {tolerance:g}")
    return diff
