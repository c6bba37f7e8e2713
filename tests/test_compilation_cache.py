"""jaxmodels.compilation_cache: where the cache goes, "off", an unusable directory, and a second process hitting it.

The processes that enable the cache are subprocesses, so this test process's JAX configuration stays untouched.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxmodels.compilation_cache import ENV_VAR, cache_dir, enable

# Compiles one function (after another directory was used, when given one) and reports the persistent-cache
# hits JAX recorded. JAX_PLATFORMS=cpu keeps the key the same in every run.
SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    from jaxmodels import compilation_cache

    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
    if len(sys.argv) > 1:  # a first directory, then the one from the environment
        compilation_cache.enable(sys.argv[1])
        jax.jit(lambda x: x - 1)(jnp.ones(3)).block_until_ready()
    directory = compilation_cache.enable()
    assert compilation_cache.enable() == directory  # a second call changes nothing
    jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
    print(json.dumps({"dir": None if directory is None else str(directory), "hits": len(hits)}))
""")


def _run(env_value, *argv) -> dict:
    env = {**os.environ, ENV_VAR: str(env_value), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, argv)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "jaxmodels" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "jaxmodels" / "xla"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"  # the argument ahead of the environment
    for off in ("off", "OFF", " off "):
        monkeypatch.setenv(ENV_VAR, off)
        assert cache_dir() is None
    monkeypatch.setenv(ENV_VAR, "")  # empty counts as unset
    assert cache_dir() == tmp_path / "home" / ".cache" / "jaxmodels" / "xla"


def test_off_leaves_jax_alone(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    before = jax.config.jax_compilation_cache_dir
    assert enable() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_uncreatable_directory_warns_and_continues(tmp_path):
    (tmp_path / "file").write_text("")
    before = jax.config.jax_compilation_cache_dir
    with pytest.warns(RuntimeWarning, match=r"compilation cache off: cannot create .*file/xla"):
        assert enable(tmp_path / "file" / "xla") is None
    assert jax.config.jax_compilation_cache_dir == before


def test_a_second_process_hits_the_cache(tmp_path):
    cache = tmp_path / "xla"
    first = _run(cache)
    assert first == {"dir": str(cache), "hits": 0}
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was written to the cache"
    second = _run(cache)
    assert second["hits"] >= 1
    assert sorted(p.name for p in cache.iterdir()) == entries  # found, not compiled and written again


def test_switching_directories_in_a_process_and_off(tmp_path):
    """enable() after another directory was in use (and compiled into) writes to the new one; "off" writes
    nowhere."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert _run(second, first)["dir"] == str(second)
    assert any(first.iterdir()) and any(second.iterdir())
    names = {p.name for p in second.iterdir()}
    assert _run("off") == {"dir": None, "hits": 0}
    assert {p.name for p in second.iterdir()} == names
