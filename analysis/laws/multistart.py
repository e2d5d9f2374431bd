"""Multi-start minimisation: one batched L-BFGS over every start at once, then a scipy polish.

Scaling-law objectives are cheap per point but have many local minima, so the published recipe
runs L-BFGS from thousands of grid starts. Looping scipy over 4,500 starts takes minutes; here all
starts share each numpy evaluation (rows of one [S, P] array), converged starts leave the batch,
and only the few best distinct end points are polished to tight tolerance.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Sequence

import numpy as np
import scipy.optimize

from dlmscale.errors import UserError

# fun(x_SxP, rows_S) -> (f_S, g_SxP). `rows` names which batch rows x holds, so an objective
# with per-row data (bootstrap weights) can pick its rows; a plain objective ignores it.
BatchFun = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BatchResult:
  x_SxP: np.ndarray
  f_S: np.ndarray
  n_iter_S: np.ndarray
  status_S: np.ndarray  # 0 converged, 1 hit max_iter, 2 line search stalled


@dataclasses.dataclass(frozen=True)
class FitResult:
  x: np.ndarray  # best point
  fun: float  # objective there
  n_starts: int
  n_at_best: int  # starts whose batched end point is within 1e-4 (relative) of the best objective
  polished: int  # how many distinct candidates were polished
  minima: tuple[tuple[np.ndarray, float], ...] = ()  # distinct polished end points, best first


def grid_starts(axes: Sequence[Sequence[float]]) -> np.ndarray:
  """The cartesian product of per-parameter start values, as [S, P]."""
  return np.array(list(itertools.product(*axes)), dtype=np.float64)


def _two_loop(g_RxP, s_RxMxP, y_RxMxP, rho_RxM, gamma_R) -> np.ndarray:
  """L-BFGS direction per row; history slot -1 is the newest, rho = 0 marks an empty slot."""
  q = g_RxP.copy()
  m = s_RxMxP.shape[1]
  alpha_RxM = np.zeros_like(rho_RxM)
  for i in range(m - 1, -1, -1):
    a = rho_RxM[:, i] * np.einsum("rp,rp->r", s_RxMxP[:, i], q)
    q -= a[:, None] * y_RxMxP[:, i]
    alpha_RxM[:, i] = a
  r = gamma_R[:, None] * q
  for i in range(m):
    b = rho_RxM[:, i] * np.einsum("rp,rp->r", y_RxMxP[:, i], r)
    r += s_RxMxP[:, i] * (alpha_RxM[:, i] - b)[:, None]
  return -r


def _clip(x, lower, upper):
  if lower is None:
    return x
  return np.clip(x, lower, upper)


def batched_lbfgs(fun: BatchFun, x0_SxP: np.ndarray, **kw) -> BatchResult:
  """Minimises every row of x0 independently (see _batched_lbfgs); trial points far off may
  overflow, which the line search rejects, so numpy's warnings about them are silenced."""
  with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
    return _batched_lbfgs(fun, x0_SxP, **kw)


def _line_search(fun: BatchFun, x, f, g, A, d, shrink: float, lower, upper):
  """Backtracking Armijo search along d for rows A: (x, f, g) accepted per row, and the rows that
  found no acceptable step in 50 tries (stalled)."""
  step = np.ones(A.size)
  x_new = x[A].copy()
  f_new = f[A].copy()
  g_new = g[A].copy()
  pending = np.arange(A.size)
  for _ in range(50):
    if pending.size == 0:
      break
    xt = _clip(x[A[pending]] + step[pending, None] * d[pending], lower, upper)
    ft, gt = fun(xt, A[pending])
    decrease = np.einsum("rp,rp->r", g[A[pending]], xt - x[A[pending]])
    ok = np.isfinite(ft) & (ft <= f[A[pending]] + 1e-4 * decrease)
    acc = pending[ok]
    x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
    pending = pending[~ok]
    step[pending] *= shrink
  stalled = np.zeros(A.size, dtype=bool)
  stalled[pending] = True
  return x_new, f_new, g_new, stalled


def _remember(s_hist, y_hist, rho, gamma, A, s, y) -> None:
  """Pushes the step s and gradient change y of rows A into their L-BFGS history (in place); a pair
  without positive curvature is kept with rho = 0, so the two-loop recursion skips it."""
  sy = np.einsum("rp,rp->r", s, y)
  yy = np.einsum("rp,rp->r", y, y)
  good = (sy > 1e-12 * yy) & (yy > 1e-300) & np.isfinite(sy) & np.isfinite(yy)
  s_hist[A] = np.roll(s_hist[A], -1, axis=1)
  y_hist[A] = np.roll(y_hist[A], -1, axis=1)
  rho[A] = np.roll(rho[A], -1, axis=1)
  s_hist[A, -1] = s
  y_hist[A, -1] = y
  rho[A, -1] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
  gamma[A] = np.where(good, sy / np.where(good, yy, 1.0), gamma[A])


def _batched_lbfgs(fun: BatchFun, x0_SxP: np.ndarray, *, max_iter: int = 400, memory: int = 10,
                   gtol: float = 1e-10, ftol: float = 1e-13, lower: np.ndarray | None = None,
                   upper: np.ndarray | None = None) -> BatchResult:
  """L-BFGS on every row at once, with a backtracking Armijo line search per row.

  `lower`/`upper` (length P) bound the search by projection. A row stops when an iteration lowers
  its objective by less than ftol (relative) or its largest gradient entry is under gtol.
  """
  x = _clip(np.array(x0_SxP, dtype=np.float64), lower, upper)
  n_rows, n_par = x.shape
  rows = np.arange(n_rows)
  f, g = fun(x, rows)
  f = np.array(f, dtype=np.float64)
  g = np.array(g, dtype=np.float64)
  s_hist = np.zeros((n_rows, memory, n_par))
  y_hist = np.zeros((n_rows, memory, n_par))
  rho = np.zeros((n_rows, memory))
  gnorm = np.linalg.norm(g, axis=1)
  gamma = 1.0 / np.maximum(gnorm, 1.0)  # first step moves x by at most ~1
  n_iter = np.zeros(n_rows, dtype=np.int64)
  status = np.ones(n_rows, dtype=np.int64)
  active = rows[np.max(np.abs(g), axis=1) > gtol]
  status[np.max(np.abs(g), axis=1) <= gtol] = 0

  for it in range(max_iter):
    if active.size == 0:
      break
    A = active
    d = _two_loop(g[A], s_hist[A], y_hist[A], rho[A], gamma[A])
    gd = np.einsum("rp,rp->r", g[A], d)
    bad = ~(gd < 0)
    if bad.any():  # not a descent direction: forget the history, take steepest descent
      d[bad] = -g[A][bad] * (1.0 / np.maximum(np.linalg.norm(g[A][bad], axis=1), 1.0))[:, None]
      rho[A[bad]] = 0.0
      gd[bad] = np.einsum("rp,rp->r", g[A][bad], d[bad])
    x_new, f_new, g_new, stalled = _line_search(fun, x, f, g, A, d, 0.5 if it else 0.25, lower, upper)
    _remember(s_hist, y_hist, rho, gamma, A, x_new - x[A], g_new - g[A])
    f_old = f[A]
    x[A], f[A], g[A] = x_new, f_new, g_new
    n_iter[A] += 1
    scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f_new)), 1e-300)
    small_f = (f_old - f_new) <= ftol * scale
    small_g = np.max(np.abs(g_new), axis=1) <= gtol
    done = (small_f & ~stalled) | small_g
    status[A[done]] = 0
    status[A[stalled & ~done]] = 2
    active = A[~(done | stalled)]

  return BatchResult(x_SxP=x, f_S=f, n_iter_S=n_iter, status_S=status)


def polish(fun: BatchFun, x0: np.ndarray, *, row: int = 0, lower=None, upper=None,
           gtol: float = 1e-13, ftol: float = 1e-16,
           max_iter: int = 20000) -> tuple[np.ndarray, float]:
  """scipy L-BFGS-B from one point, to the tight tolerance a reference comparison needs."""
  rows = np.array([row])

  def single(x):
    fv, gv = fun(x[None, :], rows)
    return float(fv[0]), np.asarray(gv[0], dtype=np.float64)

  bounds = None if lower is None else list(zip(lower, upper))
  with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
    res = scipy.optimize.minimize(single, np.asarray(x0, dtype=np.float64), jac=True,
                                  method="L-BFGS-B", bounds=bounds,
                                  options=dict(gtol=gtol, ftol=ftol, maxiter=max_iter,
                                               maxfun=4 * max_iter, maxls=60))
  return np.asarray(res.x), float(res.fun)


def candidates(x_SxP: np.ndarray, f_S: np.ndarray, k: int, rel_tol: float = 1e-3) -> np.ndarray:
  """Rows worth polishing: the k lowest pairwise-distinct end points, plus the best row of each of
  the k lowest objective levels (3 significant digits), so a slow start in a better basin that
  ranks behind many copies of one basin still gets polished."""
  finite = np.isfinite(f_S)
  order = np.argsort(np.where(finite, f_S, np.inf))
  order = order[finite[order]]
  chosen: list[int] = []
  for i in order:
    xi = x_SxP[i]
    if all(np.max(np.abs(xi - x_SxP[j]) / (1.0 + np.abs(x_SxP[j]))) > rel_tol for j in chosen):
      chosen.append(int(i))
    if len(chosen) >= k:
      break
  levels: dict[str, int] = {}
  for i in order:
    key = f"{f_S[i]:.3g}"
    if key not in levels:
      levels[key] = int(i)
      if len(levels) >= k:
        break
  return np.array(sorted(set(chosen) | set(levels.values())), dtype=np.int64)


def multistart_minimize(fun: BatchFun, starts_SxP: np.ndarray, *, n_polish: int = 6,
                        lower=None, upper=None, max_iter: int = 200, ftol: float = 1e-7,
                        gtol: float = 1e-6) -> FitResult:
  """Best minimum over all starts: batched L-BFGS on every start to moderate tolerance, then a
  tight scipy polish of the candidates; the lowest polished objective wins."""
  batch = batched_lbfgs(fun, starts_SxP, max_iter=max_iter, lower=lower, upper=upper, ftol=ftol,
                        gtol=gtol)
  cands = candidates(batch.x_SxP, batch.f_S, n_polish)
  if cands.size == 0:
    raise UserError("the fit objective is not finite at any start point; check the data for "
                    "extreme values (e.g. losses or token counts off by many orders)")
  ends = []
  for i in cands:
    xp, fp = polish(fun, batch.x_SxP[i], lower=lower, upper=upper)
    if not fp <= batch.f_S[i]:  # polish never makes a point worse
      xp, fp = batch.x_SxP[i], float(batch.f_S[i])
    ends.append((np.asarray(xp), float(fp)))
  ends.sort(key=lambda e: e[1])
  minima = []
  for x, fv in ends:
    if all(np.max(np.abs(x - m[0]) / (1.0 + np.abs(m[0]))) > 1e-3 for m in minima):
      minima.append((x, fv))
  best_x, best_f = minima[0]
  f_ref = np.where(np.isfinite(batch.f_S), batch.f_S, np.inf)
  n_at = int(np.sum(f_ref <= best_f + 1e-4 * abs(best_f)))
  return FitResult(x=best_x, fun=best_f, n_starts=int(starts_SxP.shape[0]), n_at_best=n_at,
                   polished=int(cands.size), minima=tuple(minima))
