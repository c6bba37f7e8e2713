"""LoRA adapters for the Linear layers of any of our models, applied as a parameter transform.

A targeted Linear with kernel W [*in_shape, *out_shape] gets A [I, r] and B [r, O] (I = prod(in_shape),
O = prod(out_shape)) and computes with W + (alpha / r) * (A @ B).reshape(W.shape). `apply` rewrites a parameter
State that way inside the loss, so the layers need no change, `jax.grad` with respect to the adapters alone
leaves the base frozen (no base gradients or optimizer state exist), and every layer path (tuned, plain,
remat, sharded) runs unchanged. The price is one [I, O] kernel materialised per adapted layer and step, as
in a full fine-tuning step; the input-side form x A B would save it but needs the layers to know about adapters.

A starts as U(-1/sqrt(I), 1/sqrt(I)) (peft's kaiming-uniform with a = sqrt(5)), B as zeros, so training starts
at the base model. A's rows take the logical axis of the kernel's first input axis and B's columns that of its
first output axis (a flattened [N * H] keeps N-major order, so it splits over "heads" like the kernel).

On disk (`save` / `load`): lora.safetensors keyed "<module path>.lora_A" / ".lora_B" in these layouts, and
lora.json (base model, model_type, rank, alpha, targets). `export_peft` writes the same adapters as a peft
directory (adapter_config.json, adapter_model.safetensors keyed
"base_model.model.<Hugging Face module>.lora_A.weight" [r, I] and ".lora_B.weight" [O, r]), the Hugging Face
names and layouts coming from the family's key table. `merge` gives an ordinary model (save_pretrained,
export_hf).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxmodels import family as families
from jaxmodels.hf.transforms import LinearKernel
from jaxmodels.io import atomic_directory, read_json_object
from jaxmodels.layers.axes import axes_of, param
from jaxmodels.layers.linear import Linear

CONFIG_FILE, WEIGHTS_FILE = "lora.json", "lora.safetensors"
PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
FORMAT_KEY, FORMAT_VERSION = "jaxmodels_lora", 1
FACTORS = ("lora_A", "lora_B")


class LoraError(ValueError):
    """Adapters that cannot be built, applied or loaded as asked (a user error)."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank r, alpha (the update is scaled by alpha / r), and the targeted Linear names (e.g. "q_proj")."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    base_model: str | None = None
    model_type: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(sorted(set(self.targets))))
        if self.rank < 1:
            raise LoraError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise LoraError("LoRA needs at least one target")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets), FORMAT_KEY: FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> LoraConfig:
        if data.get(FORMAT_KEY) != FORMAT_VERSION:
            raise LoraError(f"{source}: not a jaxmodels LoRA config ({FORMAT_KEY}={data.get(FORMAT_KEY)!r})")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class Target:
    """One adapted Linear: its module path, kernel shape and the split of that shape into inputs / outputs."""

    path: tuple
    kernel_shape: tuple[int, ...]
    in_ndim: int
    axes: tuple[str | None, ...]

    @property
    def key(self) -> str:
        return ".".join(map(str, self.path))

    @property
    def kernel_key(self) -> str:
        return f"{self.key}.kernel"

    @property
    def in_size(self) -> int:
        return math.prod(self.kernel_shape[: self.in_ndim])

    @property
    def out_size(self) -> int:
        return math.prod(self.kernel_shape[self.in_ndim:])

    def factor_shapes(self, rank: int) -> dict[str, tuple[int, int]]:
        return {"lora_A": (self.in_size, rank), "lora_B": (rank, self.out_size)}

    def factor_axes(self) -> dict[str, tuple[str | None, str | None]]:
        return {"lora_A": (self.axes[0], None), "lora_B": (None, self.axes[self.in_ndim])}


def linear_layers(model: nnx.Module) -> dict[str, list[Target]]:
    """{attribute name (e.g. "q_proj"): [Target of every Linear of that name]} for the whole model."""
    found: dict[str, list[Target]] = {}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Linear) and path:
            axes = axes_of(module.kernel) or (None,) * len(module.kernel.shape)
            found.setdefault(str(path[-1]), []).append(
                Target(tuple(path), tuple(module.kernel.shape), len(module.in_shape), axes))
    return found


def targets(model: nnx.Module, config: LoraConfig) -> list[Target]:
    """The Linear layers `config.targets` names, checked: known names, float kernels, rank <= both dimensions."""
    layers = linear_layers(model)
    unknown = [t for t in config.targets if t not in layers]
    if unknown:
        raise LoraError(f"unknown LoRA targets {unknown}; the Linear layers of this {type(model).__name__} are "
                        f"{', '.join(sorted(layers))}")
    chosen = sorted((t for name in config.targets for t in layers[name]), key=lambda t: t.key)
    too_small = [f"{t.kernel_key} (in {t.in_size}, out {t.out_size})" for t in chosen
                 if config.rank > min(t.in_size, t.out_size)]
    if too_small:
        raise LoraError(f"LoRA rank {config.rank} exceeds a dimension of {len(too_small)} targeted kernels: "
                        f"{', '.join(too_small[:4])}{' ...' if len(too_small) > 4 else ''}; choose a rank of at "
                        f"most {min(min(t.in_size, t.out_size) for t in chosen)} or other targets")
    return chosen


def _is_int8(model: nnx.Module, chosen: Sequence[Target]) -> bool:
    modules = dict(nnx.iter_modules(model))
    return any(getattr(modules[t.path], "scale", None) is not None for t in chosen)


def init(model: nnx.Module, config: LoraConfig, *, key: jax.Array) -> nnx.State:
    """Fresh adapters for `model`: an nnx.State of Params at <module path>.lora_A [I, r] / .lora_B [r, O],
    float32, with logical axes for sharding (module docstring)."""
    chosen = targets(model, config)
    if _is_int8(model, chosen):
        raise LoraError("LoRA on int8 weights is not supported; load the float model (dtype float32 or bfloat16)")
    sizes = [t.in_size * config.rank for t in chosen]
    # One draw for all the A's, cut on the host: one small program instead of one per shape.
    draws = np.asarray(jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0))
    flat, start = [], 0
    for t, size in zip(chosen, sizes):
        shapes, axes = t.factor_shapes(config.rank), t.factor_axes()
        a = draws[start:start + size].reshape(shapes["lora_A"]) * np.float32(1.0 / math.sqrt(t.in_size))
        start += size
        flat.append((t.path + ("lora_A",), param(jnp.asarray(a), axes["lora_A"])))
        flat.append((t.path + ("lora_B",), param(jnp.asarray(np.zeros(shapes["lora_B"], np.float32)), axes["lora_B"])))
    return nnx.from_flat_state(flat)


def _pairs(adapters: nnx.State) -> dict[tuple, dict[str, jax.Array]]:
    """{module path: {"lora_A": A, "lora_B": B}}."""
    pairs: dict[tuple, dict[str, jax.Array]] = {}
    for path, var in nnx.to_flat_state(adapters):
        if path[-1] not in FACTORS:
            raise LoraError(f"adapter entry {'.'.join(map(str, path))}: expected names ending in {FACTORS}")
        pairs.setdefault(tuple(path[:-1]), {})[path[-1]] = var[...]
    return pairs


def apply(params: nnx.State, adapters: nnx.State, scale: float) -> nnx.State:
    """`params` (an nnx.State of the model's Params) with every adapted kernel W replaced by
    W + scale * (A @ B).reshape(W.shape), computed in the adapters' dtype and added in W's. Pure: call it inside
    jit / grad. Raises LoraError when an adapter has no kernel in `params`."""
    pairs = _pairs(adapters)
    out, used = [], set()
    for path, var in nnx.to_flat_state(params):
        module = tuple(path[:-1])
        if path[-1] == "kernel" and module in pairs:
            a, b = pairs[module]["lora_A"], pairs[module]["lora_B"]
            w = var[...]
            delta = (scale * (a @ b)).reshape(w.shape)  # [I, O] -> [*in_shape, *out_shape]
            var = var.replace(w + delta.astype(w.dtype))
            used.add(module)
        out.append((path, var))
    missing = sorted(".".join(map(str, m)) for m in set(pairs) - used)
    if missing:
        raise LoraError(f"adapters for {missing[:4]} have no kernel in the model's parameters")
    return nnx.from_flat_state(out)


def check_fits(model: nnx.Module, adapters: nnx.State, config: LoraConfig) -> None:
    """Raises LoraError listing every adapter missing, unexpected or of the wrong shape for `model`."""
    expected = {t.path + (name,): shape for t in targets(model, config)
                for name, shape in t.factor_shapes(config.rank).items()}
    found = {tuple(p): tuple(v.shape) for p, v in nnx.to_flat_state(adapters)}
    name = lambda p: ".".join(map(str, p))  # noqa: E731
    problems = [f"missing {name(p)}" for p in sorted(set(expected) - set(found), key=name)]
    problems += [f"unexpected {name(p)}" for p in sorted(set(found) - set(expected), key=name)]
    problems += [f"{name(p)}: shape {found[p]}, the model needs {expected[p]}" for p in sorted(
        set(found) & set(expected), key=name) if found[p] != expected[p]]
    if problems:
        raise LoraError(f"the adapters do not fit this {type(model).__name__}: {'; '.join(problems[:6])}"
                        f"{' ...' if len(problems) > 6 else ''}")


def merge(model: nnx.Module, adapters: nnx.State, config: LoraConfig) -> nnx.Module:
    """A new model of the same class with the adapters folded into its kernels (float32 arithmetic, the
    kernels' dtype kept); `model` is left as it is."""
    check_fits(model, adapters, config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    merged = jax.jit(apply, static_argnums=2)(params, adapters, config.scale)
    return nnx.merge(graphdef, merged, rest)


def _flat_numpy(adapters: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(jax.device_get(v[...])) for p, v in nnx.to_flat_state(adapters)}


def save(path: str | os.PathLike, adapters: nnx.State, config: LoraConfig, *, overwrite: bool = True) -> Path:
    """lora.json + lora.safetensors into the directory `path`, atomically."""
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(_flat_numpy(adapters), str(tmp / WEIGHTS_FILE), metadata={"format": "jaxmodels-lora"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_config(path: str | os.PathLike) -> LoraConfig:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (expected an adapter directory written by jaxmodels.lora)")
    return LoraConfig.from_dict(read_json_object(file), str(file))


def load(path: str | os.PathLike, model: nnx.Module) -> tuple[nnx.State, LoraConfig]:
    """Adapters saved by `save`, checked against `model` (names and shapes), with their logical axes."""
    config = read_config(path)
    file = Path(path) / WEIGHTS_FILE
    try:
        arrays = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise LoraError(f"{file}: not a readable safetensors file ({e})") from None
    chosen = targets(model, config)
    flat = []
    for t in chosen:
        for name, axes in t.factor_axes().items():
            value = arrays.pop(f"{t.key}.{name}", None)
            if value is not None:
                flat.append((t.path + (name,), param(jnp.asarray(value), axes)))
    flat += [(tuple(int(p) if p.isdigit() else p for p in k.split(".")), nnx.Param(jnp.asarray(v)))
             for k, v in arrays.items()]  # left over: reported by check_fits
    adapters = nnx.from_flat_state(flat)
    check_fits(model, adapters, config)
    return adapters, config


def _peft_tensors(model: nnx.Module, adapters: nnx.State, config: LoraConfig) -> tuple[dict, list[str]]:
    """({peft key: array}, sorted Hugging Face module names targeted) through the family's key table."""
    table = families.family_of(model.config).table
    pairs = {".".join(map(str, p)): v for p, v in _pairs(jax.device_get(adapters)).items()}
    tensors, modules = {}, set()
    for t in targets(model, config):
        mapped = table.to_hf(t.kernel_key)
        if mapped is None:
            raise LoraError(f"{t.kernel_key} has no entry in the {table.name} key table: no peft name for it")
        hf_key, transform = mapped
        # A torch Linear weight is our kernel flattened to [I, O] and transposed: delta_W = (A B)^T = B^T A^T.
        if (not isinstance(transform, LinearKernel) or transform.in_ndim != t.in_ndim or not hf_key.endswith(".weight")
                or transform.hf_shape(t.kernel_shape) != (t.out_size, t.in_size)):
            raise LoraError(f"{t.kernel_key} maps to {hf_key} by {transform!r}, not a torch Linear weight: "
                            f"peft adapters cannot express it")
        module = hf_key[: -len(".weight")]
        factors = pairs[t.key]
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(np.asarray(factors["lora_A"]).T)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(np.asarray(factors["lora_B"]).T)
        modules.add(module.rsplit(".", 1)[-1])
    return tensors, sorted(modules)


def export_peft(path: str | os.PathLike, model: nnx.Module, adapters: nnx.State, config: LoraConfig, *,
                overwrite: bool = True) -> Path:
    """A peft LoRA directory (adapter_config.json + adapter_model.safetensors, float32) for the Hugging Face
    export of `model`'s family: `peft.PeftModel.from_pretrained(transformers_model, path)` loads it."""
    check_fits(model, adapters, config)
    tensors, modules = _peft_tensors(model, adapters, config)
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.rank, "lora_alpha": config.alpha,
        "target_modules": modules, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None, "base_model_name_or_path": config.base_model,
    }
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / PEFT_CONFIG_FILE).write_text(json.dumps(peft_config, indent=2, sort_keys=True) + "\n")
    return Path(path)
