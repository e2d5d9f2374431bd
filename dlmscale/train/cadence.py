"""When the loop evaluates and checkpoints: a fixed cadence or log-spaced evaluations, and a WSD
trunk's branch starts.

`eval.schedule=fixed` (the default) evaluates every eval.every_steps steps; `eval.schedule=log`
evaluates at eval.log_points steps spaced logarithmically from step 1 to the last (dense early,
few late). Both always evaluate the last step. A trunk (trunk.branch_steps) also checkpoints at
each branch start, and checkpoint.keep never deletes those (train/checkpoint.py `protect`).
"""

from __future__ import annotations

import ml_collections
import numpy as np


def log_steps(total: int, points: int) -> list[int]:
  """`points` steps log-spaced in [1, total], rounded and deduplicated; the last step included."""
  steps = np.unique(np.round(np.geomspace(1, max(total, 1), max(points, 2))).astype(int))
  return sorted(set(int(s) for s in steps if 1 <= s <= total) | {total})


def branch_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The steps whose checkpoints a trunk keeps for its branches (empty for other runs)."""
  return tuple(int(s) for s in (config.get("trunk", {}).get("branch_steps", ()) or ()))


class Cadence:
  """eval_due(step) and save_due(step) for a run of `total` steps (boundaries are the loop's)."""

  def __init__(self, config: ml_collections.ConfigDict, total: int):
    self.eval_every = int(config.eval.every_steps)
    self.save_every = int(config.checkpoint.every_steps)
    self.total = total
    self.eval_at = (set(log_steps(total, int(config.eval.log_points)))
                    if config.eval.get("schedule", "fixed") == "log" else None)
    self.save_at = set(branch_steps(config))

  def eval_due(self, step: int) -> bool:
    if self.eval_at is not None:
      return step in self.eval_at
    return step % self.eval_every == 0 or step == self.total

  def save_due(self, step: int) -> bool:
    return step % self.save_every == 0 or step in self.save_at
