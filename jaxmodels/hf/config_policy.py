"""One policy for reading a transformers config.json, shared by every model family.

A transformers config.json carries much more than its model reads: bookkeeping (`architectures`,
`transformers_version`, `_name_or_path`, `torch_dtype`), generation and tokenizer defaults (`bos_token_id`,
`unk_token_id`, `use_cache`), initialisation (`initializer_range`) and converter metadata
(`transformers.js_config`, `is_llama_config`). What decides the computation is the set of attributes the
transformers model reads. So, per family:

- `fields`: attributes the transformers model reads that map onto our config (HF name -> our field);
- `fixed`: attributes it reads where we implement only some values (HF name -> those values); any other value
  is refused, by name, with what is implemented;
- everything else changes nothing transformers computes: it is accepted and reported as ignored
  (`jaxmodels-convert inspect` lists it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


class UnsupportedConfig(ValueError):
    """A config attribute that changes the computation and is not implemented."""


@dataclasses.dataclass(frozen=True)
class HFConfigReader:
    """How one family reads a transformers config dict (see the module docstring)."""

    family: str
    fields: Mapping[str, str]
    fixed: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

    def read(self, hf: Mapping[str, Any], *, source: str, problems: list[str] | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        """-> ({our field: value}, {ignored HF attribute: value}); raises UnsupportedConfig naming every problem.

        `problems` found by the caller (e.g. in a nested rope dict) are reported together with these.
        """
        problems = list(problems or [])
        values, ignored = {}, {}
        for key, value in hf.items():
            if key in self.fields:
                values[self.fields[key]] = value
            elif key in self.fixed:
                if not any(_same(value, ok) for ok in self.fixed[key]):
                    problems.append(f"{key}={value!r} (implemented: {', '.join(map(repr, self.fixed[key]))})")
            else:
                ignored[key] = value
        if problems:
            raise UnsupportedConfig(f"{source}: unsupported {self.family} config attributes: " + "; ".join(problems))
        return values, ignored


def _same(value: Any, ok: Any) -> bool:
    """Equal, with booleans only equal to booleans (JSON `true` is not the value 1)."""
    if isinstance(value, bool) or isinstance(ok, bool):
        return value is ok
    return value == ok
