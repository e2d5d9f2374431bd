"""Chinchilla approaches 1 and 2: compute-optimal allocation without assuming the loss formula.

Approach 1 takes the lower envelope of loss-vs-compute training curves and records which model
size attains it at each compute; approach 2 fits a parabola in log N to each isoFLOP group and takes
its minimum. Both then fit N_opt = k C^a by least squares in log space. They cross-check approach 3,
whose exponent is beta / (alpha + beta).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from dlmscale.errors import UserError


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = coef * x^exponent, fitted as a line in log-log space; SEs from the regression."""
  coef: float
  exponent: float
  exponent_se: float
  log_coef_se: float
  n_points: int

  def __call__(self, x):
    return self.coef * np.asarray(x, dtype=np.float64) ** self.exponent

  def named(self) -> dict:
    return dataclasses.asdict(self)


def fit_power_law(x, y) -> PowerLaw:
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.size < 2 or np.unique(x).size < 2:
    raise UserError(f"a power-law fit needs at least 2 distinct x values, got {np.unique(x).size}")
  if np.any(x <= 0) or np.any(y <= 0):
    raise UserError("a power-law fit needs positive x and y")
  lx, ly = np.log(x), np.log(y)
  design = np.stack([np.ones_like(lx), lx], axis=1)
  coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
  dof = lx.size - 2
  if dof > 0:
    resid = ly - design @ coef
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / dof
    se = np.sqrt(np.diag(cov))
  else:
    se = np.array([np.nan, np.nan])
  return PowerLaw(coef=float(np.exp(coef[0])), exponent=float(coef[1]), exponent_se=float(se[1]),
                  log_coef_se=float(se[0]), n_points=int(lx.size))


def approach1(curves: pd.DataFrame, *, run_col: str = "run_name", n_col: str = "N",
              c_col: str = "flops", loss_col: str = "loss", n_grid: int = 200) -> dict:
  """Envelope of training curves: for each compute on a log grid, the model size whose curve
  (interpolated in log C) is lowest there; then N_opt(C) and D_opt(C) = C / (6 N_opt) power laws."""
  grid_lo, grid_hi = np.inf, -np.inf
  runs = []
  for _, g in curves.groupby(run_col):
    g = g[(g[c_col] > 0) & np.isfinite(g[loss_col])].sort_values(c_col)
    if len(g) < 2:
      continue
    lc = np.log(g[c_col].to_numpy(dtype=np.float64))
    runs.append((float(g[n_col].iloc[0]), lc, g[loss_col].to_numpy(dtype=np.float64)))
    grid_lo, grid_hi = min(grid_lo, lc[0]), max(grid_hi, lc[-1])
  if len(runs) < 2:
    raise UserError("approach 1 needs loss curves (>= 2 eval points) from at least 2 runs")
  grid = np.linspace(grid_lo, grid_hi, n_grid)
  table = np.full((len(runs), n_grid), np.inf)
  for i, (_, lc, loss) in enumerate(runs):
    inside = (grid >= lc[0]) & (grid <= lc[-1])
    table[i, inside] = np.interp(grid[inside], lc, loss)
  best = np.argmin(table, axis=0)
  n_best = np.array([runs[i][0] for i in best])
  c = np.exp(grid)
  if np.unique(n_best).size < 2:
    raise UserError("approach 1: one model size is best at every compute; add sizes so the "
                    "envelope changes hands")
  law_n = fit_power_law(c, n_best)
  law_d = fit_power_law(c, c / (6.0 * n_best))
  return dict(N_opt=law_n.named(), D_opt=law_d.named(),
              envelope=dict(C=c.tolist(), N=n_best.tolist(), loss=table[best, np.arange(n_grid)]
                            .tolist()))


def isoflop_groups(c, *, gap_dex: float = 0.1) -> np.ndarray:
  """Group labels for compute values: a new group starts where log10 C jumps by > gap_dex."""
  lc = np.log10(np.asarray(c, dtype=np.float64))
  order = np.argsort(lc)
  labels = np.empty(lc.size, dtype=np.int64)
  labels[order] = np.concatenate([[0], np.cumsum(np.diff(lc[order]) > gap_dex)])
  return labels


def approach2(n, d, loss, c=None, *, gap_dex: float = 0.1, min_points: int = 3,
              min_groups: int = 2) -> dict:
  """isoFLOP parabolas: loss ~ quadratic in log N within each compute group; minima -> N_opt(C)."""
  n, d, loss = (np.asarray(v, dtype=np.float64) for v in (n, d, loss))
  c = 6.0 * n * d if c is None else np.asarray(c, dtype=np.float64)
  labels = isoflop_groups(c, gap_dex=gap_dex)
  minima = []
  for g in np.unique(labels):
    sel = labels == g
    if sel.sum() < min_points or np.unique(n[sel]).size < 3:
      continue
    ln = np.log(n[sel])
    k2, k1, k0 = np.polyfit(ln, loss[sel], 2)
    if k2 <= 0:
      continue  # no interior minimum
    ln_opt = -k1 / (2 * k2)
    if not ln.min() <= ln_opt <= ln.max():
      continue  # the minimum lies outside the sizes tried: extrapolation
    c_g = float(np.exp(np.mean(np.log(c[sel]))))
    n_opt = float(np.exp(ln_opt))
    minima.append(dict(C=c_g, N_opt=n_opt, D_opt=c_g / (6.0 * n_opt),
                       L_opt=float(k0 + k1 * ln_opt + k2 * ln_opt ** 2), n_points=int(sel.sum())))
  if len(minima) < max(min_groups, 2):
    raise UserError(f"approach 2 found {len(minima)} isoFLOP group(s) with an interior minimum; "
                    f"it needs >= {max(min_groups, 2)} (groups of >= {min_points} sizes at one "
                    "compute)")
  cs = [m["C"] for m in minima]
  return dict(N_opt=fit_power_law(cs, [m["N_opt"] for m in minima]).named(),
              D_opt=fit_power_law(cs, [m["D_opt"] for m in minima]).named(), groups=minima)
