"""Atomic file and directory writes: write a uniquely named sibling, fsync it, then rename it over the target.

Readers see either the old file (directory) or the whole new one. What is written gets the modes a plain
`open(path, "w")` / `os.mkdir(path)` gives there (0o666 / 0o777 less the caller's umask), not tempfile's
owner-only 0o600 / 0o700: a saved model must stay readable by a serving process running as another user.
Temporary names are `.<name>.<random hex>.tmp`, created exclusively (no other process can predict or
pre-create them) and removed when the block fails. A process killed midway (SIGKILL, a power cut) cannot remove
its own: it leaves that sibling behind, never a partial target, and a `.<name>.<hex>.tmp` no process is writing
is safe to delete (tests/badinput/test_kill_resume.py kills writers to check this). Where directories cannot be
exchanged in one step, a kill between the two renames of a replacement leaves the previous directory as
`.<name>.<hex>.old`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

AT_FDCWD = -100
RENAME_EXCHANGE = 2
# renameat2 exists but this kernel or filesystem cannot exchange: fall back to two renames.
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP)


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.{kind}")


def _fsync(path: str | os.PathLike, *, directory: bool = False) -> None:
    """fsync of a file's data or of a directory's entries (the latter POSIX only: elsewhere it cannot be opened)."""
    if directory and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if not (directory and err.errno == errno.EINVAL):  # a filesystem that cannot sync directories
            raise
    finally:
        os.close(fd)


def _widen(path: str | os.PathLike, mode: int) -> None:
    """Adds the permission bits of `mode` that `path` lacks, removing none. Writers that go through tempfile
    (safetensors >= 0.8 save_file, so transformers' and peft's save_pretrained) leave files owner-only."""
    current = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & ~current:
        os.chmod(path, current | mode)


def _seal_tree(root: Path, dir_mode: int) -> None:
    """Gives every directory and regular file under `root` at least the mode a new one gets here, then fsyncs
    it, so the renamed tree reads like a plain write and never comes back empty after a crash."""
    for parent, _, files in os.walk(root):
        _widen(parent, dir_mode)
        for name in files:
            file = os.path.join(parent, name)
            if stat.S_ISREG(os.lstat(file).st_mode):
                _widen(file, dir_mode & 0o666)
                _fsync(file)
        _fsync(parent, directory=True)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while making room for `path` (a read-only or full directory) names `path`, not a temporary."""
    try:
        yield
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {path} ({e.strerror})") from None


def _new_file(path: Path) -> tuple[int, Path]:
    """An empty temporary sibling of `path`, opened for writing, with the mode open() gives (0o666 less the umask)."""
    tmp = _sibling(path, "tmp")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def _commit_file(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync(path.parent, directory=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """A file ("w" text or "wb" binary) opened on a temporary sibling of `path`, fsync'd and renamed over
    `path` only when the block succeeds."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open mode {mode!r}: expected 'w', 'wt' or 'wb' (a whole new file is written)")
    path = Path(path)
    fd, tmp = _new_file(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """The name of an empty temporary sibling of `path`, for writers that take a file name (e.g. safetensors'
    save_file); given at least open()'s mode, fsync'd and renamed over `path` only when the block succeeds."""
    path = Path(path)
    fd, tmp = _new_file(path)
    created = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        yield tmp
        _widen(tmp, created)  # in case the writer replaced the file with its own temporary one
        _fsync(tmp)
        _commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


@functools.cache
def _libc_renameat2():
    """libc's renameat2, or None where there is none (not Linux, or a libc older than glibc 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swaps the names `a` and `b` in one step (renameat2 RENAME_EXCHANGE); False where this system cannot."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _replace(new: Path, path: Path) -> None:
    """Puts the complete directory `new` at `path`, then removes what was there."""
    if _exchange(new, path):
        _fsync(path.parent, directory=True)
        _remove(new)  # now the old tree
        return
    # Two renames: for a moment there is nothing at `path`, but never a partial directory.
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    _fsync(path.parent, directory=True)
    _remove(old)


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists; refusing to overwrite it (use --force / overwrite=True)")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary sibling directory that replaces `path` only when the block succeeds.

    With overwrite=False an existing `path` raises FileExistsError before anything is written; with
    overwrite=True the old directory is swapped out (atomically on Linux) only after the new one is
    complete, then removed. Everything in the new directory gets at least the mode a new file or
    directory gets there, whatever wrote it.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    tmp = _sibling(path, "tmp")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(tmp, 0o777)
    dir_mode = stat.S_IMODE(os.stat(tmp).st_mode) & 0o777  # what the umask (or a default ACL) makes of 0o777
    try:
        yield tmp
        _seal_tree(tmp, dir_mode)
        if not os.path.lexists(path):
            os.rename(tmp, path)
            _fsync(path.parent, directory=True)
        elif overwrite:
            _replace(tmp, path)
        else:
            raise _exists(path)  # created by someone else while the block wrote
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file holding one object, as a dict; ValueError naming the file when it is not valid JSON or not an
    object (a missing file raises FileNotFoundError, as open() does)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
