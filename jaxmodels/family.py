"""The model-family record, and the registry of families.

A family is everything the load / save / export / convert code needs to know about one kind of model, declared
once beside the model (see `jaxmodels.pretrained`, which is written once over these records):

    register(Family(
        name="llama", config_class=LlamaConfig, model_classes=(LlamaForCausalLM,), table=LLAMA_TABLE,
        from_hf=LlamaConfig.read_hf_config, to_hf=lambda config, model_class: config.to_hf_config(),
        tied=lm_head_tie))

Families register themselves when their module is imported; `import jaxmodels` imports the built-in ones.
Nothing here imports a model module, so model modules can import this one without a cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxmodels.hf.tables import KeyTable

# (hf_config, tensors) -> (hf_config, tensors): an export layout other than the transformers one.
Layout = Callable[[Any, dict, list], tuple[dict, list]]


@dataclasses.dataclass(frozen=True)
class RemoteCode:
    """Modeling code shipped with an export, so transformers loads it with `trust_remote_code=True`.

    `package` is an importable package holding the files (located without importing it: it needs torch);
    `files` maps a file name in the export to a file name in the package; `auto_map(model_class)` gives the
    config.json `auto_map` for an export of that class.
    """

    package: str
    files: Mapping[str, str]
    auto_map: Callable[[type], dict[str, str]]


def causal_lm_inputs(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random token ids [2, min(64, max length)] for `--verify` of a language model."""
    spec = config.decoder_spec()
    return {"input_ids": rng.integers(0, spec.vocab_size, (2, min(64, spec.max_seq_len))).astype(np.int64)}


def no_ties(config) -> dict[str, str]:
    return {}


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: its config, classes, Hugging Face config codec and key table, and export hooks.

    from_hf(hf_config_dict, source) -> (config, {ignored attribute: value}) reads a transformers config.json
        through the shared policy (jaxmodels.hf.config_policy); to_hf(config, model_class) -> dict writes one.
    table: HF key <-> our parameter path (jaxmodels.hf.tables). tied(config) -> {stored copy: stored source}
        names HF tensors that are copies of another (left out on export, checked equal on import).
    choose_class(config, stored keys, HF config dict or None for ours) -> model class, where the weights
        decide it (V.V.A.L.T's heads).
    detect(hf_config_dict) -> bool recognises a config.json without `model_type` (the original Hyformer's).
    layouts: export layouts beside "transformers" (the original Hyformer's files).
    remote_code: modeling code for exports; twin: the module of our PyTorch twin classes (named, not imported:
        jaxmodels never imports torch), used by `jaxmodels-convert --verify`.
    presets: name -> config factory. dtypes: parameter dtypes the family supports; dtype_scope(dtype) a context
        to build and run it in (float64 needs jax x64). verify_inputs / verify_output / verify_tolerance: what
        `--verify` feeds both frameworks and compares.
    """

    name: str
    config_class: type
    model_classes: tuple[type, ...]
    table: KeyTable
    from_hf: Callable[[dict, str], tuple[Any, dict]]
    to_hf: Callable[[Any, type], dict]
    model_types: tuple[str, ...] = ()
    tied: Callable[[Any], dict[str, str]] = no_ties
    choose_class: Callable[[Any, list[str], dict | None], type] | None = None
    detect: Callable[[dict], bool] | None = None
    layouts: Mapping[str, Layout] = dataclasses.field(default_factory=dict)
    remote_code: RemoteCode | None = None
    twin: str | None = None
    presets: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    dtype_scope: Callable[[Any], Any] | None = None
    verify_inputs: Callable[[Any, np.random.Generator], dict[str, np.ndarray]] = causal_lm_inputs
    verify_output: str = "logits"
    verify_tolerance: float = 1e-4

    def __post_init__(self):
        if not self.model_types:
            object.__setattr__(self, "model_types", (self.config_class.model_type,))

    def model_class(self, config, keys: list[str], hf_config: dict | None = None) -> type:
        return self.model_classes[0] if self.choose_class is None else self.choose_class(config, keys, hf_config)

    def preset(self, name: str, **overrides):
        if name not in self.presets:
            raise ValueError(f"unknown {self.name} preset {name!r}; choose one of {sorted(self.presets)}")
        return self.presets[name](**overrides)


_FAMILIES: dict[str, Family] = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Adds a family under each of its model_types; a model_type already taken needs replace=True."""
    taken = [t for t in family.model_types if t in _FAMILIES and _FAMILIES[t] is not family]
    if taken and not replace:
        raise ValueError(f"model_type {taken[0]!r} is already registered (family {_FAMILIES[taken[0]].name!r}); "
                         f"pass replace=True to replace it")
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def unregister(family: Family) -> None:
    for model_type in family.model_types:
        if _FAMILIES.get(model_type) is family:
            del _FAMILIES[model_type]


def model_types() -> list[str]:
    return sorted(_FAMILIES)


def families() -> list[Family]:
    return list({id(f): f for f in _FAMILIES.values()}.values())


def get(model_type: str, *, source: str = "config.json") -> Family:
    if model_type not in _FAMILIES:
        raise ValueError(f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(model_types())}")
    return _FAMILIES[model_type]


def family_of(config) -> Family:
    """The family of a config object (by its model_type)."""
    return get(config.model_type, source=type(config).__name__)


def detect(cfg: dict, source: str) -> Family:
    """The family of a config.json without model_type, from each family's `detect`."""
    found = [f for f in families() if f.detect is not None and f.detect(cfg)]
    if len(found) != 1:
        raise ValueError(f"{source}: config.json has no model_type and no family recognises it (the original "
                         f"Hyformer's has none); pass --model-type (supported: {', '.join(model_types())})")
    return found[0]
