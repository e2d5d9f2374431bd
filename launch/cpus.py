"""Which cores each concurrent run of launch.local gets, and the environment that keeps it there."""

from __future__ import annotations

import os

from dlmscale.errors import UserError


def usable_cpus() -> list[int]:
  return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def check_parallel(parallel: int, n_cpus: int) -> int:
  """Threads per run. Every run needs a core of its own: more runs than cores only thrash."""
  if parallel < 1:
    raise UserError(f"--parallel={parallel}: use 1 or more concurrent runs")
  if parallel > n_cpus:
    raise UserError(
        f"--parallel={parallel} asks for more concurrent runs than this machine can run: only "
        f"{n_cpus} CPU core(s) are usable here and each run needs at least one. Use --parallel={n_cpus} "
        "or less (the cores are split evenly between runs).")
  return n_cpus // parallel


def thread_env(threads: int, parallel: int, base_xla_flags: str = "") -> dict[str, str]:
  """Environment that keeps one run on `threads` cores (empty for a lone run: it may use them all)."""
  if parallel == 1:
    return {}
  n = str(threads)
  xla = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
  return {
      "XLA_FLAGS": f"{base_xla_flags} {xla}".strip(),
      "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
      "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1",
      "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # accelerator memory is shared between the runs
  }


def slot_cpus(cpus: list[int], slot: int, threads: int) -> list[int]:
  return cpus[slot * threads:(slot + 1) * threads]
