"""Point-resampling bootstrap for the law fits: weights, batched refits, and their summaries.

A resample is a vector of integer counts per point, so a replicate is the same objective with
weights; every replicate and every start of it is one row of a single batched L-BFGS
(multistart.batched_lbfgs), and each replicate keeps its best start.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analysis.laws import multistart


def bootstrap_weights(n_points: int, n_boot: int, seed: int) -> np.ndarray:
  """Resampling with replacement as integer counts per point, [n_boot, n_points]."""
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n_points, size=(n_boot, n_points))
  w = np.zeros((n_boot, n_points))
  np.add.at(w, (np.repeat(np.arange(n_boot), n_points), idx.ravel()), 1.0)
  return w


def refit(objective: Callable[[np.ndarray], multistart.BatchFun], weights_RxN: np.ndarray,
          starts_RxKxP: np.ndarray, *, lower=None, upper=None) -> np.ndarray:
  """The best of K starts per replicate, as [R', P] over the replicates that ended finite.

  objective(weights) builds the batched objective for per-row point weights; replicate r's K
  starts are rows r*K .. r*K+K-1, all minimised in one batched L-BFGS."""
  n_boot, per, n_par = starts_RxKxP.shape
  fun = objective(np.repeat(weights_RxN, per, axis=0))
  res = multistart.batched_lbfgs(fun, starts_RxKxP.reshape(n_boot * per, n_par), lower=lower,
                                 upper=upper, max_iter=300, gtol=1e-9, ftol=1e-11)
  f = np.where(np.isfinite(res.f_S), res.f_S, np.inf).reshape(n_boot, per)
  pick = np.argmin(f, axis=1)
  x = res.x_SxP.reshape(n_boot, per, n_par)[np.arange(n_boot), pick]
  return x[np.isfinite(f[np.arange(n_boot), pick])]


def summarize(samples: dict[str, np.ndarray], level: float) -> tuple[dict, dict]:
  """Per parameter: the SE (sample std) and the percentile interval at `level`."""
  lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
  se = {k: float(np.std(v, ddof=1)) if v.size > 1 else float("nan") for k, v in samples.items()}
  ci = {k: (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) if v.size else
        (float("nan"), float("nan")) for k, v in samples.items()}
  return se, ci
