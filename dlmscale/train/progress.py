"""What the trainer says while it runs: the train loss averaged between log rows, and the progress line.

The averaging window's sums are saved with each checkpoint, so a resumed run logs the same row it
would have logged without the stop.
"""

from __future__ import annotations

import time

import numpy as np
from clu import metrics as clu_metrics


class Window:
  """Train scalars averaged (clu Average) between two log rows; its sums live in the checkpoint."""

  def __init__(self, sums: dict | None = None):
    sums = sums or {}
    self.loss = clu_metrics.Average(total=np.float64(sums.get("loss_total", 0.0)),
                                    count=np.int64(sums.get("count", 0)))
    self.t0, self.steps = time.perf_counter(), 0

  def add(self, loss: float) -> None:
    self.loss = self.loss.merge(clu_metrics.Average(total=np.float64(loss), count=np.int64(1)))
    self.steps += 1

  def sums(self) -> dict:
    return {"loss_total": float(self.loss.total), "count": int(self.loss.count)}


def line(step: int, total: int, loss: float, tok_s: float, mfu: float | None, epoch: float,
              eta_s: float) -> str:
  mfu_s = f" | MFU {100 * mfu:4.1f}%" if mfu is not None else ""
  return (f"step {step:>{len(str(total))}}/{total} | loss {loss:.4f} | {tok_s / 1e3:7.1f}k tok/s"
          f"{mfu_s} | epoch {epoch:7.2f} | ETA {duration(eta_s)}")


def duration(seconds: float) -> str:
  """H:MM:SS, with whole days in front beyond 24 hours (3d 04:05:06)."""
  days, rest = divmod(int(max(seconds, 0)), 86400)
  clock = time.strftime('%H:%M:%S', time.gmtime(rest))
  return f"{days}d {clock}" if days else clock
