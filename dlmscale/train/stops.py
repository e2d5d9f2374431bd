"""How a training run is stopped: SIGTERM/SIGINT ask for a checkpoint and a clean exit, and the
test hook DLMSCALE_FAULT provokes a kill, a stop or a divergence at a chosen step."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np


def fault_injection() -> tuple[str, int] | None:
  """Test hook: DLMSCALE_FAULT=kill:N (SIGKILL) or term:N (SIGTERM) sent to itself before step N,
  or nan:N (the parameters become NaN before step N, so step N's loss is NaN: divergence)."""
  spec = os.environ.get("DLMSCALE_FAULT", "")
  if not spec:
    return None
  kind, step = spec.split(":")
  return kind, int(step)


def maybe_fault(fault: tuple[str, int] | None, step: int, state):
  """The state to train step `step` from (poisoned for nan:N)."""
  if fault and fault[1] == step:
    if fault[0] == "nan":
      return state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
    os.kill(os.getpid(), {"kill": signal.SIGKILL, "term": signal.SIGTERM}[fault[0]])
  return state


class StopFlag:
  """SIGTERM/SIGINT ask the loop to checkpoint at the current step and exit cleanly."""

  def __init__(self):
    self.signal: int | None = None
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal = signum

  def restore(self) -> None:
    for s, h in self._old.items():
      signal.signal(s, h)
