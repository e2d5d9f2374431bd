"""Multi-host start-up: call `jax.distributed.initialize()` only when the environment asks for it.

Recognised: explicit coordinator variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID: also how tests run two CPU processes on localhost), a multi-task SLURM job, and a
multi-worker TPU VM slice. A single process on a laptop does nothing here.
"""

from __future__ import annotations

import os

import jax


def _explicit() -> dict | None:
  addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not addr:
    return None
  return dict(coordinator_address=addr,
              num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
              process_id=int(os.environ["JAX_PROCESS_ID"]))


def _cluster_detected() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in workers


def maybe_initialize() -> bool:
  """Returns True when this process joined a multi-process job."""
  kwargs = _explicit()
  if kwargs is None and not _cluster_detected():
    return False
  # Nothing here may touch a backend before initialize(); gloo only matters to CPU processes.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**(kwargs or {}))
  return True
