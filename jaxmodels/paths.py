"""Where a writer may write: never onto, around or into what it reads.

`--force` means "replace the destination", never "destroy an input". Every writer (jaxmodels-convert, the
trainers' run directories and outputs, adapters) calls `check_destination` with its inputs before it reads or
writes anything: a destination that is an input, holds one (a parent directory) or lies inside one is refused.
Both sides are compared with symbolic links resolved, and the destination also by where its own name sits, so
a link can neither carry a destination into an input nor hide one that sits inside an input.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path


class OverlapError(ValueError):
    """A destination that is, contains or lies inside one of the writer's inputs."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _places(destination: Path) -> list[Path]:
    """Where writing `destination` lands: what its name resolves to, and the name itself in its resolved parent
    (a symbolic link is replaced there, not followed)."""
    named = _real(destination.parent) / destination.name
    return list(dict.fromkeys([_real(destination), named]))


def _relation(place: Path, source: Path) -> str | None:
    if place == source:
        return "is"
    if place in source.parents:
        return "holds"
    if source in place.parents:
        return "lies inside"
    return None


def check_destination(destination: str | os.PathLike, sources: Iterable[str | os.PathLike | None], *,
                      what: str = "the destination") -> None:
    """Raises OverlapError when `destination` is, contains or lies inside one of `sources` (None entries and
    paths that do not exist, e.g. hub ids, are skipped: there is nothing there to destroy)."""
    destination = Path(destination)
    places = _places(destination)
    for source in sources:
        if source is None or not os.path.lexists(source):
            continue
        real = _real(source)
        for place in places:
            relation = _relation(place, real)
            if relation is not None:
                via = "" if place == Path(os.path.abspath(destination)) else f" (resolved: {place})"
                raise OverlapError(f"{what} {destination}{via} {relation} the source {source}; refusing to "
                                   f"write there (--force replaces a destination, never an input): choose another path")


def expand(values: Iterable[str | os.PathLike | None]) -> list[str]:
    """The paths `values` name, globs expanded (e.g. the trainers' --data patterns), None left out."""
    out: list[str] = []
    for value in values:
        if value is None:
            continue
        value = os.fspath(value)
        out += sorted(glob.glob(value, recursive=True)) if glob.has_magic(value) else [value]
    return out
