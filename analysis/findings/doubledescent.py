"""Double descent on a loss-vs-size or loss-vs-epochs series (Nakkiran et al. 2019).

A peak counts when the loss rises above the lowest value before it AND falls below the peak again
after it, each by more than `z` combined standard errors. Plain overfitting (rise, no second fall)
and plain improvement (no rise) are not double descent.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Peak:
  x: float  # where the loss peaks
  loss: float
  x_before: float  # the lowest point before the peak
  x_after: float  # the lowest point after it
  rise: float
  fall: float
  rise_z: float  # rise / combined SE (inf when SEs are zero)
  fall_z: float

  def named(self) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()}


def _z(diff: float, se_a: float, se_b: float) -> float:
  s = float(np.hypot(se_a, se_b))
  return diff / s if s > 0 else (np.inf if diff > 0 else 0.0)


def detect(x, loss, se=None, *, z: float = 2.0, min_change: float = 0.0,
           pair_se: Callable[[int, int], float] | None = None) -> list[Peak]:
  """Significant peaks of the series sorted by x, most significant first.

  se None means no uncertainty is known: any rise and fall above min_change counts.
  pair_se(i, j), given, is the SE of loss[i] - loss[j] (input positions), e.g. paired per sequence.
  """
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(loss, dtype=np.float64)
  s = np.zeros_like(y) if se is None else np.nan_to_num(np.asarray(se, dtype=np.float64))
  ok = np.isfinite(x) & np.isfinite(y)
  x, y, s = x[ok], y[ok], s[ok]
  sort = np.argsort(x, kind="stable")
  order = np.flatnonzero(ok)[sort]  # sorted position -> input position
  x, y, s = x[sort], y[sort], s[sort]
  peaks = []
  for j in range(1, x.size - 1):
    if not (y[j] > y[j - 1] and y[j] >= y[j + 1]):
      continue  # not a local maximum
    i = int(np.argmin(y[:j]))
    k = j + 1 + int(np.argmin(y[j + 1:]))
    rise, fall = y[j] - y[i], y[j] - y[k]
    if pair_se is None:
      rz, fz = _z(rise, s[i], s[j]), _z(fall, s[j], s[k])
    else:
      rz, fz = _z(rise, pair_se(order[i], order[j]), 0.0), _z(fall, pair_se(order[j], order[k]), 0.0)
    if rise > min_change and fall > min_change and rz > z and fz > z:
      peaks.append(Peak(x=float(x[j]), loss=float(y[j]), x_before=float(x[i]),
                        x_after=float(x[k]), rise=float(rise), fall=float(fall),
                        rise_z=float(rz), fall_z=float(fz)))
  peaks.sort(key=lambda p: (-min(p.rise_z, p.fall_z), -min(p.rise, p.fall)))
  return peaks
