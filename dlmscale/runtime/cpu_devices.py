"""On a CPU, one JAX device per core: the train step runs data-parallel across cores.

XLA's CPU backend spreads one device's ops over the cores with intra-op threads, which leaves cores
idle between and inside small ops; splitting the batch over one device per core keeps them busy.
On the 2-core benchmark machine that is 5-20% more tokens/s at every ladder size from s0.2M to s10M
(BENCHMARKS.md). The count is the largest that divides the train and eval batches, up to
MAX_DEVICES (more has not been measured). It changes only how the batch is split, so resuming
with another count is allowed, as with any mesh.

Left alone when the user chose: XLA_FLAGS with xla_force_host_platform_device_count,
JAX_NUM_CPU_DEVICES, a mesh other than the default (data=-1, fsdp=1), or a multi-process run.
Accelerator machines are unaffected: the setting only shapes JAX's CPU backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import ml_collections

MAX_DEVICES = 8


def usable_cores() -> int:
  """Cores this process may run on (launch.local pins parallel runs to their own cores)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def choose(cores: int, batch_sizes: Sequence[int]) -> int:
  """The most devices, at most min(cores, MAX_DEVICES), that every batch splits evenly over."""
  limit = max(1, min(cores, MAX_DEVICES))
  return max(n for n in range(1, limit + 1) if all(b % n == 0 for b in batch_sizes))


def user_chose() -> bool:
  return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or "JAX_NUM_CPU_DEVICES" in os.environ)


def wanted(config: ml_collections.ConfigDict) -> int | None:
  """The count configure() sets for this config, or None when it leaves JAX alone."""
  if user_chose() or config.mesh.data != -1 or config.mesh.fsdp != 1:
    return None
  return choose(usable_cores(), (int(config.batch_size), int(config.eval.batch_size)))


def configure(config: ml_collections.ConfigDict) -> int | None:
  """Sets jax_num_cpu_devices before JAX starts its backends; call it only in a single-process run.

  Returns the count set, or None when left to the user or the defaults.
  """
  n = wanted(config)
  if n is None:
    return None
  if n > 1:
    jax.config.update("jax_num_cpu_devices", n)
  return n if n > 1 else None


def started() -> bool:
  """Whether this process's JAX backends exist already (then the device count is fixed)."""
  from jax._src import xla_bridge  # noqa: PLC0415 - no public API says this
  return xla_bridge.backends_are_initialized()


def current() -> int:
  """This process's CPU device count (starts JAX's backends)."""
  return len(jax.devices("cpu"))
