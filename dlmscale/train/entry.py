"""The one entry for a run, alone (`python -m dlmscale.main`) or in a grid worker (launch/worker.py).

JAX is started the way the launch asks: a multi-process job joins `jax.distributed` (explicit
coordinator variables, a multi-task SLURM job, a multi-worker TPU slice); a single process gets the
CPU device count its config asks for. A worker that already started JAX for an earlier point keeps
it (launch/worker.py respawns when a point needs another device count).
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

from dlmscale.runtime import cpu_devices, multihost
from dlmscale.train import loop


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
          allow_new_data: bool = False) -> dict[str, Any] | None:
  """The run's summary once finished; None when a signal stopped it (checkpointed, resumable)."""
  if not cpu_devices.started() and not multihost.maybe_initialize():
    cpu_devices.configure(config)
  return loop.train_and_evaluate(config, workdir, allow_new_data=allow_new_data)
