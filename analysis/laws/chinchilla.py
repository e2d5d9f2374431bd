"""Chinchilla approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as Besiroglu et al. 2024.

The prediction is made in log space, log L = logsumexp(a - alpha log N, b - beta log D, e) with
a, b, e = log A, log B, log E, so the fit never sees negative or overflowing terms. The objective is
the summed Huber loss of log residuals, minimised by L-BFGS from the 4,500-point grid of the paper;
the best end point over all starts wins. Bootstrap refits resample points as integer weights, so all
replicates run in one batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.laws import bootstrap as boot
from analysis.laws import logspace as hub
from analysis.laws import multistart
from analysis.laws.checks import check_fit_inputs

PARAMS = ("a", "b", "e", "alpha", "beta")  # a = log A, b = log B, e = log E
_EXP_MAX = 700.0  # exp(709) overflows float64

# Besiroglu et al.: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}.
GRID_AXES = (
    np.arange(0.0, 25.1, 5.0),  # a
    np.arange(0.0, 25.1, 5.0),  # b
    np.arange(-1.0, 1.01, 0.5),  # e
    np.arange(0.0, 2.01, 0.5),  # alpha
    np.arange(0.0, 2.01, 0.5),  # beta
)
# The exponents' range in that grid: an exponent whose bootstrap interval spans most of it is not
# measured (identify.spread_reason).
EXPONENT_RANGE = {"alpha": (0.0, 2.0), "beta": (0.0, 2.0)}


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
  params: dict[str, float]  # a, b, e, alpha, beta plus A, B, E
  objective: float  # summed Huber loss at the optimum
  n_points: int
  n_starts: int
  n_at_best: int

  @property
  def x(self) -> np.ndarray:
    return np.array([self.params[k] for k in PARAMS])


def objective(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
              weights_RxN: np.ndarray | None = None,
              delta: float = hub.DELTA) -> multistart.BatchFun:
  """Summed Huber objective and its gradient for rows of [a, b, e, alpha, beta].

  With weights_RxN, batch row i is weighted by weights_RxN[rows[i]] (bootstrap replicates).
  """

  def fun(x_SxP: np.ndarray, rows: np.ndarray):
    a, b, e, alpha, beta = (x_SxP[:, k:k + 1] for k in range(5))
    # logsumexp shifted by e: two exps instead of three; the clamp only bites far from any fit.
    t0 = np.exp(np.minimum((a - e) - alpha * log_n, _EXP_MAX))
    t1 = np.exp(np.minimum((b - e) - beta * log_d, _EXP_MAX))
    s = t0 + t1
    s += 1.0
    r = np.log(s)
    r += e
    r -= log_l
    w = 1.0 if weights_RxN is None else weights_RxN[rows]
    h, hp = hub.huber_and_grad(r, delta)
    f = np.sum(h * w, axis=1)
    hp /= s
    hp *= w
    q0, q1 = hp * t0, hp * t1
    g = np.stack([q0.sum(1), q1.sum(1), hp.sum(1), -(q0 @ log_n), -(q1 @ log_d)], axis=1)
    return f, g

  return fun


def predict(params: dict[str, float], n, d) -> np.ndarray:
  n = np.asarray(n, dtype=np.float64)
  d = np.asarray(d, dtype=np.float64)
  lse, _ = hub.logsumexp_softmax(params["a"] - params["alpha"] * np.log(n),
                                 params["b"] - params["beta"] * np.log(d),
                                 np.full(np.broadcast(n, d).shape, params["e"]))
  return np.exp(lse)


def _named(x: np.ndarray) -> dict[str, float]:
  p = {k: float(v) for k, v in zip(PARAMS, x)}
  p.update(A=float(np.exp(p["a"])), B=float(np.exp(p["b"])), E=float(np.exp(p["e"])))
  return p


def fit(n, d, loss, *, starts: np.ndarray | None = None, delta: float = hub.DELTA,
        n_polish: int = 6) -> ChinchillaFit:
  """Approach 3 from the Besiroglu grid (or `starts`); the best of all starts."""
  n, d, loss = check_fit_inputs(n_params=n, d_tokens=d, loss=loss, n_free=len(PARAMS),
                                law="chinchilla")
  fun = objective(np.log(n), np.log(d), np.log(loss), delta=delta)
  starts = multistart.grid_starts(GRID_AXES) if starts is None else np.atleast_2d(starts)
  res = multistart.multistart_minimize(fun, starts, n_polish=n_polish)
  return ChinchillaFit(params=_named(res.x), objective=res.fun, n_points=int(n.size),
                       n_starts=res.n_starts, n_at_best=res.n_at_best)


@dataclasses.dataclass(frozen=True)
class Bootstrap:
  se: dict[str, float]
  ci: dict[str, tuple[float, float]]  # percentile interval
  level: float
  n_boot: int
  samples: dict[str, np.ndarray]  # per-replicate estimates (finite ones)


def bootstrap(n, d, loss, best: ChinchillaFit, *, n_boot: int = 200, seed: int = 0,
              level: float = 0.95, n_grid_starts: int = 8, delta: float = hub.DELTA) -> Bootstrap:
  """Resamples points with replacement and refits each replicate from the best fit plus a few
  random grid starts; every replicate and start is one row of a single batched L-BFGS."""
  n, d, loss = check_fit_inputs(n_params=n, d_tokens=d, loss=loss, n_free=len(PARAMS),
                                law="chinchilla")
  w = boot.bootstrap_weights(n.size, n_boot, seed)
  rng = np.random.default_rng(seed + 1)
  grid = multistart.grid_starts(GRID_AXES)
  per = 1 + n_grid_starts
  starts = np.empty((n_boot, per, len(PARAMS)))
  starts[:, 0] = best.x
  for j in range(1, per):
    starts[:, j] = grid[rng.integers(0, grid.shape[0], size=n_boot)]
  log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
  x = boot.refit(lambda w_rows: objective(log_n, log_d, log_l, weights_RxN=w_rows, delta=delta),
                 w, starts)
  samples = {k: x[:, i] for i, k in enumerate(PARAMS)}
  # A replicate of an unidentified fit can wander to a = 800: A = inf and its SE NaN are the
  # honest summary (identify.spread_reason reads them), not a reason for numpy to warn.
  with np.errstate(over="ignore", invalid="ignore"):
    samples.update(A=np.exp(x[:, 0]), B=np.exp(x[:, 1]), E=np.exp(x[:, 2]),
                   allocation_exponent=x[:, 4] / (x[:, 3] + x[:, 4]))
    se, ci = boot.summarize(samples, level)
  return Bootstrap(se=se, ci=ci, level=level, n_boot=int(x.shape[0]), samples=samples)


# --- compute-optimal allocation (closed form, C = 6 N D) -----------------------------------------

def log_g(a, b, alpha, beta):
  """log G, G = (alpha A / (beta B))^(1 / (alpha + beta)) (Hoffmann et al. A.3; a, b = log A,
  log B): the compute-optimal N_opt = G (C/6)^(beta/(alpha+beta)), and the N for which D tokens
  are compute-optimal is G (D G)^(beta/alpha). Every allocation here goes through this."""
  return (np.log(alpha) - np.log(beta) + a - b) / (alpha + beta)


def allocation(params: dict[str, float], compute) -> dict[str, np.ndarray | float]:
  """N_opt(C), D_opt(C) minimising L subject to C = 6 N D; G as in Hoffmann et al. (A.3)."""
  alpha, beta = params["alpha"], params["beta"]
  A = params.get("A", np.exp(params["a"]))
  B = params.get("B", np.exp(params["b"]))
  c = np.asarray(compute, dtype=np.float64)
  g = np.exp(log_g(np.log(A), np.log(B), alpha, beta))
  a_exp = beta / (alpha + beta)
  b_exp = alpha / (alpha + beta)
  n_opt = g * (c / 6.0) ** a_exp
  d_opt = (c / 6.0) ** b_exp / g
  full = dict(params, A=A, B=B, E=params.get("E", np.exp(params["e"])))
  return dict(G=float(g), a_N_exponent=float(a_exp), b_D_exponent=float(b_exp), N_opt=n_opt,
              D_opt=d_opt, D_over_N=d_opt / n_opt,
              L_opt=full["E"] + A / n_opt ** alpha + B / d_opt ** beta)


def d_to_n_opt(params: dict[str, float], d_tokens) -> np.ndarray:
  """The model size for which d_tokens is compute-optimal: N = G (D G)^(beta/alpha)."""
  alpha, beta = params["alpha"], params["beta"]
  lg = log_g(params["a"], params["b"], alpha, beta)
  return np.exp(lg + (beta / alpha) * (np.log(np.asarray(d_tokens, dtype=np.float64)) + lg))
