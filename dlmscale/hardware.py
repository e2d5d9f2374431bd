"""What the hardware can do: the denominator of MFU.

Accelerators: the published dense bf16 peak per chip, keyed by `device_kind`. CPUs publish no such
number that a run can trust, so the peak is measured: the float32 throughput of a large matmul on
the same machine, in the same process.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

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
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def published_peak(device: jax.Device | None = None) -> float | None:
  """The datasheet peak for this device kind, or None (CPU, unknown chip)."""
  kind = (device or jax.devices()[0]).device_kind
  if kind in PEAK_BF16:
    return PEAK_BF16[kind]
  matches = [v for k, v in PEAK_BF16.items() if kind.startswith(k) or k.startswith(kind)]
  return matches[0] if matches else None


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
