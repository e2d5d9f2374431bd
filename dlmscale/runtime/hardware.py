"""What the hardware can do: the denominator of MFU, and the memory a program must fit.

Accelerators: the published dense bf16 peak per chip, keyed by `device_kind`. CPUs publish no such
number that a run can trust, so the peak is measured: the float32 throughput of a large matmul on
the same machine, in the same process. Memory (device_memory): what the device's allocator reports,
else the datasheet; on a CPU the host's available memory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp

from dlmscale.errors import UserError

# Dense bf16 FLOP/s per device (no sparsity), from vendor datasheets.
PEAK_BF16: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5": 459e12,  # v5p's device_kind
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


@dataclasses.dataclass(frozen=True)
class Memory:
  """A chip's published HBM: capacity (bytes), bandwidth (bytes/s), and where the figures are from."""
  hbm_bytes: float
  hbm_bytes_per_s: float
  source: str


# Per chip (TPU) or per GPU, from the vendors' pages. Google's "GB" for TPU HBM are GiB: the v5e
# compiler reports 15.75 GiB usable on the "16 GB" chip, so capacity is read as GiB there; NVIDIA's
# are read as 1e9 bytes, the smaller reading. The TPU compiler enforces its own limit when it
# compiles (launch/aot.py prints it for a program that does not fit).
HBM: dict[str, Memory] = {
    "TPU v4": Memory(32 * 2**30, 1200e9, "cloud.google.com/tpu/docs/v4: 32 GiB HBM2, 1200 GBps"),
    "TPU v5": Memory(95 * 2**30, 2765e9, "cloud.google.com/tpu/docs/v5p: 95 GB HBM2e, 2765 GBps"),
    "TPU v5 lite": Memory(16 * 2**30, 819e9, "cloud.google.com/tpu/docs/v5e: 16 GB HBM2, 819 GBps"),
    "TPU v6 lite": Memory(32 * 2**30, 1638e9, "cloud.google.com/tpu/docs/v6e: 32 GB HBM, 1638 GBps"),
    "NVIDIA H100 80GB HBM3": Memory(80e9, 3.35e12, "nvidia.com/en-us/data-center/h100: 80 GB, 3.35 TB/s (SXM)"),
    "NVIDIA H200": Memory(141e9, 4.8e12, "nvidia.com/en-us/data-center/h200: 141 GB, 4.8 TB/s"),
    "NVIDIA A100-SXM4-80GB": Memory(80e9, 2.039e12, "nvidia.com/en-us/data-center/a100: 80 GB, 2039 GB/s"),
    "NVIDIA A100-SXM4-40GB": Memory(40e9, 1.555e12, "nvidia.com/en-us/data-center/a100: 40 GB, 1555 GB/s"),
}


def lookup(table: dict, kind: str):
  """table[kind], else the longest key that `kind` starts with ('NVIDIA H200 NVL' -> 'NVIDIA H200'),
  so 'TPU v5' (v5p) never picks up 'TPU v5 lite' (v5e); None when no key fits."""
  if kind in table:
    return table[kind]
  keys = sorted((k for k in table if kind.startswith(k)), key=len, reverse=True)
  return table[keys[0]] if keys else None


def published_peak(device: jax.Device | None = None) -> float | None:
  """The datasheet peak for this device kind, or None (CPU, unknown chip)."""
  return lookup(PEAK_BF16, (device or jax.devices()[0]).device_kind)


def published_memory(device_kind: str) -> Memory | None:
  return lookup(HBM, device_kind)


def measured_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of an n x n matmul chain on the default device: the best of `repeats` timings."""
  a = jnp.ones((n, n), dtype) / n
  f = jax.jit(lambda x: x @ a @ a @ a @ a)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 4 * 2 * n**3 / best


def peak_flops_per_device(measure_on_cpu: bool = True) -> tuple[float | None, str]:
  """(peak, where it came from): the datasheet where known, else a measured matmul on CPU."""
  peak = published_peak()
  if peak is not None:
    return peak, "datasheet bf16"
  if jax.default_backend() == "cpu" and measure_on_cpu:
    return measured_matmul_peak(n=1024, repeats=3), "measured f32 matmul"
  return None, "unknown"


MEMORY_ENV = "DLMSCALE_DEVICE_MEMORY_BYTES"


def device_memory(devices: Sequence[jax.Device]) -> tuple[int, str]:
  """(bytes one device may use, where that figure is from): what a program's per-device footprint
  (XLA's memory analysis) is held against, e.g. by `--stack=auto` (train/stack_fit.py).

  - $DLMSCALE_DEVICE_MEMORY_BYTES, when set: the memory of each device, believed as given. Tests set
    it to make a device small enough to split a stack on a CPU; a user sets it below the real figure
    to keep headroom (another process on the GPU, a profiler).
  - An accelerator: the smallest `memory_stats()['bytes_limit']` of `devices`, what JAX's allocator
    will hand out (on a GPU 75% of the card unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise);
    else the datasheet's HBM (HBM above).
  - A CPU: the host's available memory, shared by its CPU devices, so divided among them.
  """
  given = os.environ.get(MEMORY_ENV, "").strip()
  if given:
    try:
      value = int(float(given))
    except ValueError:
      value = 0
    if value < 1:
      raise UserError(f"{MEMORY_ENV}={given!r}: give a number of bytes per device, e.g. 40e9, or unset it")
    return value, MEMORY_ENV
  if devices[0].platform == "cpu":
    n = max(len(devices), 1)
    return host_available_bytes() // n, f"host available memory / {n} CPU devices"
  limit = allocator_limit(devices)
  if limit:
    return limit, "memory_stats()['bytes_limit']"
  mem = published_memory(devices[0].device_kind)
  if mem is None:
    raise UserError(f"no memory figure for {devices[0].device_kind!r}: set {MEMORY_ENV} to its bytes "
                    "per device")
  return int(mem.hbm_bytes), f"datasheet ({mem.source})"


def allocator_limit(devices: Sequence[jax.Device]) -> int | None:
  """The smallest `memory_stats()['bytes_limit']` of live `devices`: what JAX's allocator will hand
  out, below the card's memory on a GPU (75% unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise).
  None where there is no such figure: CPU devices, and the abstract devices of an AOT topology, which
  have no allocator (their memory_stats is absent or raises)."""
  try:
    stats = [d.memory_stats() or {} for d in devices]
  except Exception:  # noqa: BLE001 - abstract (topology) devices have no runtime to ask
    return None
  limits = [int(s["bytes_limit"]) for s in stats if s.get("bytes_limit")]
  return min(limits) if limits else None


def host_available_bytes() -> int:
  """MemAvailable of /proc/meminfo (what can be allocated without swapping), else free pages."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
