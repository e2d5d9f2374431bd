"""JAX's persistent compilation cache, on by default: a process that compiles a program another
process (or an earlier run in this one) already compiled loads the executable from disk instead.

For tiny models XLA compilation is most of a run's wall time (BENCHMARKS.md, grid throughput), and
most of a grid's programs repeat: every point of one objective and shape shares its init and eval
programs, and a resumed or re-run point repeats all of its own. A cached executable is the one XLA
built, so results are bitwise those of a fresh compile.

Where: $DLMSCALE_COMPILE_CACHE, else <data cache>/xla (as dlmscale/data/pipeline.py finds the data cache:
$DLMSCALE_CACHE or ~/.cache/dlmscale). Left alone when the user configured JAX's own cache
(JAX_COMPILATION_CACHE_DIR or jax.config); DLMSCALE_COMPILE_CACHE=off turns it off. A directory this
user cannot create or write (a shared, read-only data cache) turns it off for the process with one
line on stdout: the cache only saves time, so it never stops a run. Entries are
not evicted (JAX's size limit needs the `filelock` package, which is not a requirement): a few MB per
model shape for the CPU grids; delete the directory to reclaim it.
"""

from __future__ import annotations

import os
import pathlib

import jax


def cache_dir() -> pathlib.Path | None:
  """The directory this process should use, or None when it is off or the user chose JAX's own."""
  own = os.environ.get("DLMSCALE_COMPILE_CACHE", "")
  if own.lower() == "off":
    return None
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
    return None
  if own:
    return pathlib.Path(own).expanduser()
  data_cache = os.environ.get("DLMSCALE_CACHE") or "~/.cache/dlmscale"
  return pathlib.Path(data_cache).expanduser() / "xla"


def enable() -> pathlib.Path | None:
  """Turns the cache on for this process (idempotent; before or after JAX started)."""
  path = cache_dir()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
    why = None if os.access(path, os.W_OK | os.X_OK) else "not writable by this user"
  except OSError as e:
    why = f"cannot be created: {e.strerror}"
  if why:
    print(f"note: compilation cache off for this process: {path} {why} (set DLMSCALE_COMPILE_CACHE to "
          "a directory you can write, or to off)", flush=True)
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
