"""Critical compute: where diffusion's best achievable loss drops below AR's at equal FLOPs.

For one unique-token budget U, each family's frontier is its best loss so far as compute grows
(the running minimum over runs sorted by FLOPs), drawn as a line in log C between the points that
set a new best. The crossing is the compute above which the MDM frontier stays below the AR one.
Across budgets, log C_crit = a + b log U (Prabhudesai et al.: C_crit = 2.12e15 (U/1e6)^2.174).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.laws.approaches import PowerLaw, fit_power_law


@dataclasses.dataclass(frozen=True)
class Frontier:
  log_c: np.ndarray  # where the running minimum improves, plus the largest compute tried
  loss: np.ndarray
  se: np.ndarray

  def at(self, log_c_query) -> np.ndarray:
    """Linear in log C between knots; NaN outside the frontier's range."""
    q = np.asarray(log_c_query, dtype=np.float64)
    out = np.interp(q, self.log_c, self.loss)
    return np.where((q < self.log_c[0]) | (q > self.log_c[-1]), np.nan, out)


def frontier(compute, loss, se=None) -> Frontier:
  c = np.asarray(compute, dtype=np.float64)
  l = np.asarray(loss, dtype=np.float64)
  s = np.zeros_like(l) if se is None else np.nan_to_num(np.asarray(se, dtype=np.float64))
  ok = (c > 0) & np.isfinite(l)
  c, l, s = c[ok], l[ok], s[ok]
  order = np.lexsort((l, c))
  c, l, s = c[order], l[order], s[order]
  keep = []
  best = np.inf
  for i in range(c.size):
    if l[i] < best:
      best = l[i]
      keep.append(i)
  keep = np.array(keep, dtype=np.int64)
  log_c, fl, fs = np.log(c[keep]), l[keep], s[keep]
  if c[-1] > c[keep[-1]]:  # larger runs did not improve: the best so far holds up to them
    log_c = np.append(log_c, np.log(c[-1]))
    fl, fs = np.append(fl, fl[-1]), np.append(fs, fs[-1])
  return Frontier(log_c=log_c, loss=fl, se=fs)


@dataclasses.dataclass(frozen=True)
class Crossing:
  status: str  # "crosses" | "mdm_below_throughout" | "mdm_never_below" | "no_overlap"
  c_crit: float | None  # FLOPs above which MDM stays ahead (status "crosses")
  loss_at_crossing: float | None
  c_range: tuple[float, float] | None  # the compute range where both frontiers exist
  gap_at_max: float | None  # AR - MDM at the largest shared compute (> 0: MDM ahead)
  gap_se_at_max: float | None

  def named(self) -> dict:
    return dataclasses.asdict(self)


def critical_compute(ar: Frontier, mdm: Frontier) -> Crossing:
  """The compute above which MDM's frontier stays strictly below AR's (within the shared range)."""
  lo = max(ar.log_c[0], mdm.log_c[0])
  hi = min(ar.log_c[-1], mdm.log_c[-1])
  if not lo < hi:
    return Crossing("no_overlap", None, None, None, None, None)
  knots = np.unique(np.concatenate([[lo, hi], ar.log_c, mdm.log_c]))
  knots = knots[(knots >= lo) & (knots <= hi)]
  gap = ar.at(knots) - mdm.at(knots)  # > 0 where MDM is lower
  i_hi = int(np.argmin(np.abs(ar.log_c - hi)))
  j_hi = int(np.argmin(np.abs(mdm.log_c - hi)))
  gap_se = float(np.hypot(ar.se[min(i_hi, ar.se.size - 1)], mdm.se[min(j_hi, mdm.se.size - 1)]))
  common = dict(c_range=(float(np.exp(lo)), float(np.exp(hi))), gap_at_max=float(gap[-1]),
                gap_se_at_max=gap_se)
  # C_crit is the compute above which MDM stays ahead: the start of the final stretch where it
  # is lower. A lead at small compute that AR later takes back (often noise) is not a crossing.
  if gap[-1] <= 0:
    return Crossing("mdm_never_below", None, None, **common)
  not_below = np.flatnonzero(gap <= 0)
  if not_below.size == 0:
    return Crossing("mdm_below_throughout", None, None, **common)
  k = int(not_below[-1]) + 1
  g0, g1 = gap[k - 1], gap[k]
  t = g0 / (g0 - g1) if g0 != g1 else 0.0  # g0 <= 0 < g1
  log_c = knots[k - 1] + t * (knots[k] - knots[k - 1])
  return Crossing("crosses", float(np.exp(log_c)), float(ar.at(log_c)), **common)


def fit_c_crit(budgets, c_crits) -> PowerLaw:
  """log C_crit = a + b log U over the budgets where the families cross (needs >= 2)."""
  return fit_power_law(budgets, c_crits)
