"""The shared assertions of the bad-input suite: a user error is exit status 2 and exactly one stderr line
starting with `error:` that names what was wrong, no traceback, and the files involved exactly as they were."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def snapshot(*roots: str | os.PathLike) -> dict[str, object]:
    """Every path under `roots` (symbolic links not followed) -> what it is: a file's sha256, a link's target,
    'dir'; a root that does not exist -> None."""
    out: dict[str, object] = {}
    for root in map(Path, roots):
        if not os.path.lexists(root):
            out[str(root)] = None
            continue
        paths = [root] if not root.is_dir() or root.is_symlink() else [root, *sorted(root.rglob("*"))]
        for p in paths:
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = "dir"
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def user_error(capsys, run: Callable[[], object], *names: str) -> str:
    """Runs `run` (a CLI's main with its arguments): it must end with status 2 (raised as SystemExit or returned)
    and print exactly one `error:` line and no traceback; each of `names` must appear in that line."""
    capsys.readouterr()
    try:
        status = run()
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2, (status, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def refused(capsys, run: Callable[[], object], *names: str, untouched: Iterable[str | os.PathLike] = ()) -> str:
    """user_error, and every path under `untouched` (sources and destination) as it was before."""
    untouched = list(untouched)
    before = snapshot(*untouched)
    line = user_error(capsys, run, *names)
    assert snapshot(*untouched) == before, line
    return line


def leftovers(directory: str | os.PathLike, name: str) -> list[str]:
    """Temporary siblings a failed atomic write of `directory/name` would leave (`.name.<hex>.tmp`)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(f".{name}."))
