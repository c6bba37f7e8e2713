"""jaxmodels.io: atomic writes get the umask's modes, leave nothing behind on failure, and swap directories whole."""

import ctypes
import errno
import os
import stat
import sys
import tempfile

import pytest

import jaxmodels
from jaxmodels import io
from jaxmodels.svf import decompose

REFUSAL = r"already exists; refusing to overwrite it \(use --force / overwrite=True\)"


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.fixture(scope="module")
def hyformer():
    return jaxmodels.Hyformer.from_config(jaxmodels.HyformerConfig.tiny(), seed=0)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree_modes(root) -> dict[str, int]:
    """{path relative to root: mode} of root and everything under it."""
    out = {".": mode(root)}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(parent, name)
            out[os.path.relpath(full, root)] = mode(full)
    return out


def expected_modes(root, umask: int) -> dict[str, int]:
    return {rel: (0o777 if os.path.isdir(os.path.join(root, rel)) else 0o666) & ~umask for rel in tree_modes(root)}


def test_files_get_the_mode_open_would_give(umask, tmp_path):
    with io.atomic_open(tmp_path / "nested" / "a.txt", "w") as f:  # creates the missing parent
        f.write("a")
    with io.atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"b")
    io.atomic_write_text(tmp_path / "c.txt", "c")
    io.atomic_write_bytes(tmp_path / "d.bin", b"d")
    with io.atomic_path(tmp_path / "e.bin") as name:
        with open(name, "wb") as f:  # a writer that takes a file name and opens it
            f.write(b"e")
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == {
        "nested/a.txt": b"a", "b.bin": b"b", "c.txt": b"c", "d.bin": b"d", "e.bin": b"e"}
    modes = tree_modes(tmp_path)
    del modes["."]  # pytest's own directory
    assert modes == {"nested": 0o777 & ~umask, **{k: 0o666 & ~umask for k in modes if k != "nested"}}
    assert mode(tmp_path / "c.txt") == (0o644 if umask == 0o022 else 0o600)
    assert mode(tmp_path / "nested") == (0o755 if umask == 0o022 else 0o700)


def test_directories_and_their_files_get_the_umask_modes(umask, tmp_path):
    for overwrite in (False, True):  # new, then replacing the existing one
        with io.atomic_directory(tmp_path / "out", overwrite=overwrite) as d:
            (d / "sub").mkdir()
            (d / "sub" / "f.txt").write_text("x")
            with open(d / "g.txt", "w") as f:
                f.write(str(overwrite))
        assert tree_modes(tmp_path / "out") == expected_modes(tmp_path / "out", umask)
        assert mode(tmp_path / "out") == (0o755 if umask == 0o022 else 0o700)
    assert (tmp_path / "out" / "g.txt").read_text() == "True"


def _write_like_safetensors(path, data: bytes) -> None:
    """What safetensors >= 0.8 save_file does: its own owner-only temporary file, renamed over the name."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def test_owner_only_writers_are_widened_to_the_umask_mode_never_narrowed(umask, tmp_path):
    with io.atomic_path(tmp_path / "a.safetensors") as name:
        _write_like_safetensors(name, b"a")
    with io.atomic_directory(tmp_path / "out", overwrite=False) as d:
        _write_like_safetensors(d / "model.safetensors", b"m")
        os.mkdir(tempfile.mkdtemp(dir=d) + "/inner")
        (d / "run.sh").write_text("#!/bin/sh\n")
        (d / "run.sh").chmod(0o750)
    assert mode(tmp_path / "a.safetensors") == 0o666 & ~umask and (tmp_path / "a.safetensors").read_bytes() == b"a"
    modes = tree_modes(tmp_path / "out")
    assert modes.pop("run.sh") == 0o750 | (0o666 & ~umask)  # its execute bits are kept
    assert modes == {k: v for k, v in expected_modes(tmp_path / "out", umask).items() if k != "run.sh"}
    assert len(modes) == 4  # ., model.safetensors, the mkdtemp directory and the one inside it


def test_save_pretrained_gets_the_umask_modes(umask, hyformer, tmp_path):
    out = hyformer.save_pretrained(tmp_path / "model")
    modes = tree_modes(out)
    assert {"config.json", "model.safetensors"} <= set(modes)
    assert modes == expected_modes(out, umask)


def test_svd_cache_gets_the_umask_mode(umask, hyformer, tmp_path):
    decompose(hyformer, cache_dir=tmp_path / "svd")
    (cache,) = (tmp_path / "svd").iterdir()
    assert cache.name.startswith("svd-") and cache.suffix == ".safetensors"
    assert tree_modes(tmp_path / "svd") == expected_modes(tmp_path / "svd", umask)


def test_atomic_open_writes_whole_files_only(tmp_path):
    with pytest.raises(ValueError, match=r"atomic_open mode 'a': expected 'w', 'wt' or 'wb'"):
        with io.atomic_open(tmp_path / "f", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", ["atomic_open", "atomic_path"])
def test_a_failing_block_keeps_the_old_file_and_leaves_nothing(tmp_path, writer):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        if writer == "atomic_open":
            with io.atomic_open(target) as f:
                f.write("half of the new")
                f.flush()
                raise RuntimeError("boom")
        else:
            with io.atomic_path(target) as name:
                name.write_text("half of the new")
                raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_readers_see_the_old_file_until_the_block_ends(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with io.atomic_open(target) as f:
        f.write("new")
        f.flush()
        assert target.read_text() == "old"
        (tmp,) = [n for n in os.listdir(tmp_path) if n != "f.txt"]
        assert tmp.startswith(".f.txt.") and tmp.endswith(".tmp") and len(tmp) == len(".f.txt..tmp") + 16
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_temporary_names_are_random_and_created_exclusively(tmp_path, monkeypatch):
    with io.atomic_open(tmp_path / "f"), io.atomic_open(tmp_path / "f"):
        names = os.listdir(tmp_path)
        assert len(set(names)) == 2 and all(n.startswith(".f.") for n in names)
    monkeypatch.setattr(io.secrets, "token_hex", lambda n: "0" * 2 * n)
    planted = tmp_path / f".g.{'0' * 16}.tmp"
    planted.write_text("someone else's")
    with pytest.raises(FileExistsError):
        io.atomic_write_text(tmp_path / "g", "mine")
    with pytest.raises(FileExistsError):
        with io.atomic_directory(tmp_path / "g", overwrite=False):
            pass
    assert planted.read_text() == "someone else's" and not (tmp_path / "g").exists()


def test_writes_are_fsynced(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("names an fd through /proc/self/fd")
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    io.atomic_write_text(tmp_path / "f", "x")
    assert any(p.startswith(str(tmp_path / ".f.")) for p in synced)  # the data, before the rename
    assert str(tmp_path) in synced  # the rename
    synced.clear()
    with io.atomic_directory(tmp_path / "d", overwrite=False) as d:
        (d / "sub").mkdir()
        (d / "sub" / "a").write_text("a")
    assert {os.path.relpath(p, d) for p in synced if p.startswith(str(d))} == {".", "sub", os.path.join("sub", "a")}
    assert str(tmp_path) in synced


def test_existing_directory_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old")
    (tmp_path / "file").write_text("a file")
    for existing in ("out", "file"):
        ran = []
        with pytest.raises(FileExistsError, match=f"{tmp_path / existing} {REFUSAL}"):
            with io.atomic_directory(tmp_path / existing, overwrite=False):
                ran.append(True)
        assert not ran
    assert sorted(os.listdir(tmp_path)) == ["file", "out"]
    assert os.listdir(tmp_path / "out") == ["keep.txt"] and (tmp_path / "file").read_text() == "a file"


def test_a_directory_created_meanwhile_is_not_overwritten(tmp_path):
    with pytest.raises(FileExistsError, match=REFUSAL):
        with io.atomic_directory(tmp_path / "out", overwrite=False) as d:
            (d / "mine").write_text("mine")
            (tmp_path / "out").mkdir()  # another process got there first
            (tmp_path / "out" / "theirs").write_text("theirs")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["theirs"]


def test_a_failing_block_keeps_the_old_directory_and_leaves_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_directory(tmp_path / "out", overwrite=True) as d:
            (d / "new.txt").write_text("new")
            assert os.listdir(tmp_path / "out") == ["old.txt"]  # readers still see the old one
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["old.txt"]


def _renameat2_failing_with(code: int):
    calls = []

    def renameat2(*args):
        calls.append(args)
        ctypes.set_errno(code)
        return -1

    return renameat2, calls


@pytest.fixture(params=["exchange", "ENOSYS", "EINVAL", "no symbol"])
def swap(request, monkeypatch):
    """Which way an existing directory is replaced; yields the renameat2 calls made."""
    if request.param == "no symbol":
        monkeypatch.setattr(io, "_libc_renameat2", lambda: None)
        yield []
        return
    if request.param == "exchange":
        real = io._libc_renameat2()
        if real is None:
            pytest.skip("no renameat2 in this libc")
        calls = []

        def renameat2(*args):
            calls.append((*args, real(*args)))
            return calls[-1][-1]
    else:
        renameat2, calls = _renameat2_failing_with(getattr(errno, request.param))
    monkeypatch.setattr(io, "_libc_renameat2", lambda: renameat2)
    yield calls
    assert calls and all(c[4] == io.RENAME_EXCHANGE for c in calls)  # each replacement tried the exchange first
    if request.param == "exchange":
        assert all(c[-1] == 0 for c in calls), "RENAME_EXCHANGE failed on this filesystem; the fallback ran instead"


def test_replacing_a_directory_leaves_exactly_the_new_contents(tmp_path, swap):
    old = tmp_path / "out"
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "a.txt").write_text("old a")
    (old / "b.txt").write_text("old b")
    with io.atomic_directory(old, overwrite=True) as d:
        (d / "b.txt").write_text("new b")
        (d / "c").mkdir()
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*")) == ["b.txt", "c"]
    assert (old / "b.txt").read_text() == "new b"
    assert os.listdir(tmp_path) == ["out"]


def test_replacing_a_file_or_a_symlink_removes_only_the_entry(tmp_path, swap):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "kept.txt").write_text("not ours to delete")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "file").write_text("a file")
    for name in ("link", "file"):
        with io.atomic_directory(tmp_path / name, overwrite=True) as d:
            (d / "new.txt").write_text(name)
        assert not (tmp_path / name).is_symlink() and os.listdir(tmp_path / name) == ["new.txt"]
    assert os.listdir(tmp_path / "target") == ["kept.txt"]
    assert sorted(os.listdir(tmp_path)) == ["file", "link", "target"]


def test_fallback_puts_the_old_directory_back_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    renameat2, _ = _renameat2_failing_with(errno.ENOSYS)
    monkeypatch.setattr(io, "_libc_renameat2", lambda: renameat2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    real_rename = os.rename

    def rename(src, dst):
        if os.fspath(src).endswith(".tmp") and os.fspath(dst) == str(tmp_path / "out"):
            raise OSError(errno.EIO, "simulated I/O error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="simulated I/O error"):
        with io.atomic_directory(tmp_path / "out", overwrite=True) as d:
            (d / "new.txt").write_text("new")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["old.txt"]


def test_other_renameat2_errors_are_raised(tmp_path, monkeypatch):
    renameat2, _ = _renameat2_failing_with(errno.EACCES)
    monkeypatch.setattr(io, "_libc_renameat2", lambda: renameat2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(PermissionError):
        with io.atomic_directory(tmp_path / "out", overwrite=True) as d:
            (d / "new.txt").write_text("new")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["old.txt"]
