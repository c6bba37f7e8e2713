"""Frozen config dataclasses with a strict JSON round trip.

A config checks its fields' types and ranges when it is built (`check_positive_ints`, `check_numbers` in its
`__post_init__`), raising ConfigFieldError; the readers of config files (`ConfigMixin.from_dict`, the families'
Hugging Face readers, through `build`) name the file in front of it, so a negative, string or float dimension
is one message naming the file, the key and what was expected, never a failure deep inside JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from jaxmodels.io import atomic_write_text, read_json_object

# Keys written beside a config's fields that are metadata, not fields.
_METADATA_KEYS = ("model_type", "jaxmodels_version")


class ConfigFieldError(ValueError):
    """A config field whose value has the wrong type or range."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_ints(config, names: tuple[str, ...], *, optional: tuple[str, ...] = ()) -> None:
    """Every field of `names` (and of `optional`, which may also be None) is an integer > 0."""
    for name in (*names, *optional):
        value = getattr(config, name)
        if not (value is None and name in optional) and not (_is_int(value) and value > 0):
            expected = "a positive integer" + (" or None" if name in optional else "")
            raise ConfigFieldError(f"{type(config).__name__}.{name} must be {expected}, got {value!r}")


def check_numbers(config, names: tuple[str, ...]) -> None:
    """Every field of `names` is a real number (an int or a float, not a bool or a string)."""
    for name in names:
        value = getattr(config, name)
        if not (_is_int(value) or isinstance(value, float)):
            raise ConfigFieldError(f"{type(config).__name__}.{name} must be a number, got {value!r}")


def build(cls: type, values: dict[str, Any], source: str):
    """cls(**values), its field errors prefixed by `source` (the file they were read from)."""
    try:
        return cls(**values)
    except ConfigFieldError as e:
        raise ConfigFieldError(f"{source}: {e}") from None


class ConfigMixin:
    """JSON round trip for a frozen dataclass: unknown fields and missing required fields raise."""

    model_type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self.to_json_string())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ConfigMixin:
        data = dict(data)
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        for key in _METADATA_KEYS:
            data.pop(key, None)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown {cls.__name__} fields {unknown}; valid fields are {sorted(fields)}")
        missing = sorted(name for name, f in fields.items() if name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"{source}: missing required {cls.__name__} fields {missing}")
        return build(cls, data, source)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ConfigMixin:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return cls.from_dict(read_json_object(path), source=str(path))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ConfigMixin:
        """Reads a config JSON file, or `config.json` inside a directory."""
        path = Path(path)
        return cls.from_json(path / "config.json" if path.is_dir() else path)

    def replace(self, **changes) -> ConfigMixin:
        return dataclasses.replace(self, **changes)
