"""Fixtures of the bad-input suite: read-only directories (also for root) and a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest


@pytest.fixture
def read_only(tmp_path):
    """read_only(name) -> a new directory under tmp_path nothing can be created in: mode 0o555, or for root
    (whom modes do not stop) the immutable attribute; undone at the end so tmp_path can be removed."""
    made = []

    def make(name: str = "read-only"):
        path = tmp_path / name
        path.mkdir()
        if os.geteuid() != 0:
            path.chmod(0o555)
        elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                                capture_output=True).returncode != 0:
            pytest.skip("running as root on a filesystem without the immutable attribute: no read-only directory")
        made.append(path)
        return path

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
