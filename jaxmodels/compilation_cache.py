"""JAX's persistent compilation cache for the command-line tools: a second start loads what the first compiled.

`enable()` points JAX at a cache directory: its argument, else $JAXMODELS_COMPILATION_CACHE ("off" turns the
cache off), else $XDG_CACHE_HOME/jaxmodels/xla (~/.cache/jaxmodels/xla when XDG_CACHE_HOME is unset). Every
compiled program is stored, however quickly it compiled: JAX's default threshold (1 s) would skip the many
small programs a start-up compiles, which on a 2-core CPU add up. The cache holds executables keyed by the
program, the compiler options and the JAX / XLA versions, so a changed model or another jaxlib never reuses a
stale entry. Like JAX's own cache, the directory is trusted: whoever can write to it can run code in our
process. Details and measured start-up times: docs/compilation.md.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV_VAR = "JAXMODELS_COMPILATION_CACHE"
OFF = "off"


def cache_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The directory `enable(path)` uses (absolute), or None when $JAXMODELS_COMPILATION_CACHE says "off"."""
    if path is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env.lower() == OFF:
            return None
        if env:
            path = env
        else:
            base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            path = Path(base) / "jaxmodels" / "xla"
    return Path(path).expanduser().absolute()


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Turns JAX's persistent compilation cache on in `cache_dir(path)`; returns that directory, or None when
    the cache is off or the directory cannot be created (a warning then, never an error: the cache only saves
    time). Calling it again with the same directory changes nothing."""
    directory = cache_dir(path)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(f"compilation cache off: cannot create {directory} ({err.strerror or err}); set "
                      f"{ENV_VAR} to a writable directory, or to {OFF!r}", RuntimeWarning, stacklevel=2)
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir == str(directory):
        return directory
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor either
    # JAX decides once per process whether the cache is in use, at the first compilation; an earlier compile
    # (before enable) or another directory would otherwise stick.
    compilation_cache.reset_cache()
    return directory
