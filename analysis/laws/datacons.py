"""The data-constrained law of Muennighoff et al. 2023, with analytic gradients.

Repeated tokens are worth less than fresh ones: D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) with
R_D = D / U_D - 1 repetitions, so R_D* is the repetition count at which value has decayed by 1/e.
Parameters beyond what U_D tokens can use compute-optimally decay the same way with R_N*. Then
L = E + A / N'^alpha + B / D'^beta. R_D* is THE number the MDM-vs-AR comparison is about.

Parameters are fitted in log space (rd = log R_D*, rn = log R_N*) with the Chinchilla base either
frozen (Muennighoff's recipe: base from single-epoch runs) or free (joint fit).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.laws import bootstrap as boot
from analysis.laws import logspace as hub
from analysis.laws import multistart
from analysis.laws.checks import check_fit_inputs
from analysis.laws.chinchilla import log_g
from dlmscale.errors import UserError

FULL = ("a", "b", "e", "alpha", "beta", "rd", "rn")  # rd = log R_D*, rn = log R_N*
BASE = FULL[:5]
_EXP_MAX = 700.0

# The published C4 fit (alpha = beta tied), as in the datablations README.
MUENNIGHOFF_C4 = dict(a=6.255414, b=7.3049974, e=0.6254804, alpha=0.3526596, beta=0.3526596)
MUENNIGHOFF_STARS = dict(R_D_star=15.387756, R_N_star=5.309743)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Which of FULL are free. Fixed values come from `fixed`; tie makes beta follow alpha."""
  free: tuple[str, ...]
  fixed: dict[str, float]
  tie_exponents: bool = False

  def matrix(self) -> tuple[np.ndarray, np.ndarray]:
    """theta_full = offset + M @ x_free."""
    m = np.zeros((len(FULL), len(self.free)))
    off = np.zeros(len(FULL))
    for i, name in enumerate(FULL):
      src = "alpha" if (self.tie_exponents and name == "beta") else name
      if src in self.free:
        m[i, self.free.index(src)] = 1.0
      elif src in self.fixed:
        off[i] = self.fixed[src]
      else:
        raise ValueError(f"parameter {name} is neither free nor fixed")
    return off, m


def terms(theta_full: dict[str, float] | np.ndarray, n, d, u) -> dict[str, np.ndarray]:
  """Effective data and parameters for one parameter set (the law's intermediate quantities)."""
  t = theta_full if isinstance(theta_full, dict) else dict(zip(FULL, theta_full))
  n, d, u = (np.asarray(v, dtype=np.float64) for v in (n, d, u))
  u = np.minimum(u, d)
  rd_star, rn_star = np.exp(t["rd"]), np.exp(t["rn"])
  r_d = np.maximum(d / u - 1.0, 0.0)
  lg = log_g(t["a"], t["b"], t["alpha"], t["beta"])
  # In logs, as the objective does: a base with a tiny alpha puts N_U (the N for which U is
  # compute-optimal) at exp(-1000) = 0 in floats, and N / U_N, N'^-alpha would divide by zero.
  log_n = np.log(n)
  log_un = np.minimum(log_n, lg + (t["beta"] / t["alpha"]) * (np.log(u) + lg))
  r_n = np.maximum(np.exp(np.minimum(log_n - log_un, _EXP_MAX)) - 1.0, 0.0)
  d_eff = u + u * rd_star * (1.0 - np.exp(-r_d / rd_star))
  log_n_eff = log_un + np.log1p(rn_star * (1.0 - np.exp(-r_n / rn_star)))
  return dict(R_D=r_d, R_N=r_n, U_N=np.exp(log_un), D_eff=d_eff, N_eff=np.exp(log_n_eff),
              log_N_eff=log_n_eff)


def predict(params: dict[str, float], n, d, u) -> np.ndarray:
  """L(N, D, U). params: a, b, e, alpha, beta and R_D_star, R_N_star (or rd, rn in log)."""
  t = dict(params)
  t.setdefault("rd", np.log(t["R_D_star"]) if "R_D_star" in t else None)
  t.setdefault("rn", np.log(t["R_N_star"]) if "R_N_star" in t else None)
  tt = terms(t, n, d, u)
  return (np.exp(t["e"]) + np.exp(t["a"] - t["alpha"] * tt["log_N_eff"])
          + np.exp(t["b"]) / tt["D_eff"] ** t["beta"])


def objective(spec: Spec, n, d, u, loss, weights_RxN: np.ndarray | None = None,
              delta: float = hub.DELTA) -> multistart.BatchFun:
  """Summed Huber loss of log residuals over rows of free parameters, with its gradient."""
  off, mat = spec.matrix()
  u = np.minimum(u, d)
  log_n, log_u, log_l = np.log(n), np.log(u), np.log(loss)
  r_d = np.maximum(d / u - 1.0, 0.0)

  def fun(x_SxP: np.ndarray, rows: np.ndarray):
    th = off + x_SxP @ mat.T  # [S, 7]
    a, b, e, alpha, beta, s_d, s_n = (th[:, k:k + 1] for k in range(7))
    rd, rn = np.exp(s_d), np.exp(s_n)
    # effective data
    qd = np.exp(-r_d / rd)
    fd = 1.0 + rd * (1.0 - qd)
    log_dp = log_u + np.log(fd)
    dlogdp_dsd = (rd * (1.0 - qd) - qd * r_d) / fd
    # effective parameters; U_N = min(N, N_U), N_U = G (U G)^(beta / alpha)
    apb = alpha + beta
    lg = log_g(a, b, alpha, beta)
    lu_g = log_u + lg
    log_nu = lg + (beta / alpha) * lu_g
    capped = log_nu < log_n  # U_N = N_U (excess parameters) vs U_N = N
    log_un = np.where(capped, log_nu, log_n)
    r_n = np.maximum(np.exp(log_n - log_un) - 1.0, 0.0)
    qn = np.exp(-r_n / rn)
    fn = 1.0 + rn * (1.0 - qn)
    log_np = log_un + np.log(fn)
    dlognp_dsn = (rn * (1.0 - qn) - qn * r_n) / fn
    dlognp_dlogun = np.where(capped, 1.0 - qn * (r_n + 1.0) / fn, 0.0)
    k = 1.0 + beta / alpha
    dlg_da = 1.0 / apb
    dlg_dalpha = 1.0 / (alpha * apb) - lg / apb
    dlg_dbeta = -1.0 / (beta * apb) - lg / apb
    dnu = [k * dlg_da, -k * dlg_da, 0.0 * a, k * dlg_dalpha - (beta / alpha ** 2) * lu_g,
           k * dlg_dbeta + lu_g / alpha]  # d log N_U / d (a, b, e, alpha, beta)
    # prediction: logsumexp shifted by e
    t0 = np.exp(np.minimum((a - e) - alpha * log_np, _EXP_MAX))
    t1 = np.exp(np.minimum((b - e) - beta * log_dp, _EXP_MAX))
    s = 1.0 + t0 + t1
    r = np.log(s) + e - log_l
    w = 1.0 if weights_RxN is None else weights_RxN[rows]
    h, c = hub.huber_and_grad(r, delta)
    f = np.sum(h * w, axis=1)
    c = c * w / s  # dloss/dr times softmax denominator
    p0c, p1c, p2c = c * t0, c * t1, c  # c * softmax weights
    via_n = -alpha * p0c * dlognp_dlogun  # dloss via log N' through log U_N
    g_full = np.stack([
        (p0c + via_n * dnu[0]).sum(1),
        (p1c + via_n * dnu[1]).sum(1),
        p2c.sum(1),
        (-p0c * log_np + via_n * dnu[3]).sum(1),
        (-p1c * log_dp + via_n * dnu[4]).sum(1),
        (-beta * p1c * dlogdp_dsd).sum(1),
        (-alpha * p0c * dlognp_dsn).sum(1),
    ], axis=1)
    return f, g_full @ mat

  return fun


@dataclasses.dataclass(frozen=True)
class DataconsFit:
  params: dict[str, float]  # the 7 log-space values plus A, B, E, R_D_star, R_N_star
  objective: float
  n_points: int
  free: tuple[str, ...]
  at_bound: tuple[str, ...]  # free log-star parameters that ended on a search bound
  r2: float  # of L, not log L
  search: str = "wide"
  other_minima: tuple[dict, ...] = ()  # other polished local minima: their stars and objective

  def named(self) -> dict:
    return dict(self.params, objective=self.objective, n_points=self.n_points,
                free=list(self.free), at_bound=list(self.at_bound), r2=self.r2,
                search=self.search, other_minima=list(self.other_minima))


def _complete(theta: np.ndarray) -> dict[str, float]:
  p = {k: float(v) for k, v in zip(FULL, theta)}
  p.update(A=float(np.exp(p["a"])), B=float(np.exp(p["b"])), E=float(np.exp(p["e"])),
           R_D_star=float(np.exp(p["rd"])), R_N_star=float(np.exp(p["rn"])))
  return p


def _bounds(free: tuple[str, ...], star_max: float) -> tuple[np.ndarray, np.ndarray]:
  lo = np.full(len(free), -np.inf)
  hi = np.full(len(free), np.inf)
  for i, name in enumerate(free):
    if name in ("rd", "rn"):
      lo[i], hi[i] = np.log(STAR_MIN), np.log(star_max)
    if name in ("alpha", "beta"):
      lo[i], hi[i] = 1e-3, 5.0
  return lo, hi


def search_bounds(free: tuple[str, ...], search: str) -> tuple[np.ndarray, np.ndarray]:
  """The box the fit searched for the free parameters (for identifiability checks)."""
  return _bounds(tuple(free), SEARCHES[search][1])


STAR_MIN = 1e-2
WIDE_STAR_MAX = 1e5  # beyond 1e5 repetitions no grid of ours could tell the difference
WIDE_STARS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 1e4)
# Muennighoff et al. started R_D*, R_N* from linspace(0, 20, 4) (0 is degenerate, dropped) and
# their solution lies inside that range; `search="published"` keeps the search in [0.01, 20].
PUBLISHED_STAR_MAX = 20.0
PUBLISHED_STARS = (20.0 / 3, 40.0 / 3, 20.0)
SEARCHES = {"wide": (WIDE_STARS, WIDE_STAR_MAX), "published": (PUBLISHED_STARS, PUBLISHED_STAR_MAX)}


def default_starts(spec: Spec, base_guess: dict[str, float] | None = None,
                   search: str = "wide") -> np.ndarray:
  """The star grid crossed with the base guess, or a coarser star grid crossed with a coarse
  Chinchilla-like grid when the base is free (162 base starts x 6 star pairs)."""
  stars = np.array(SEARCHES[search][0])
  free_base = base_guess is None and any(k in spec.free for k in BASE)
  if free_base:
    stars = stars[[0, len(stars) // 2, -1]]
  axes = []
  for name in spec.free:
    if name == "rn" and free_base:
      axes.append(np.log(stars[:2]))
    elif name in ("rd", "rn"):
      axes.append(np.log(stars))
    elif base_guess is not None:
      axes.append([base_guess[name]])
    else:
      axes.append({"a": [2.0, 6.0, 12.0], "b": [2.0, 6.0, 12.0], "e": [-0.5, 0.5],
                   "alpha": [0.2, 0.4, 0.8], "beta": [0.2, 0.4, 0.8]}[name])
  return multistart.grid_starts(axes)


def make_spec(*, base: dict[str, float] | None, tie_exponents: bool = False,
              fit_rd: bool = True, fit_rn: bool = True,
              fixed_stars: dict[str, float] | None = None) -> Spec:
  """base given -> those five frozen; otherwise free. Stars not fitted sit at fixed_stars (log)."""
  fixed = {k: float(v) for k, v in (base or {}).items() if k in BASE}
  stars = dict(rd=np.log(15.0), rn=np.log(5.0))
  stars.update(fixed_stars or {})
  free = [] if base else ["a", "b", "e", "alpha"] + ([] if tie_exponents else ["beta"])
  for name, on in (("rd", fit_rd), ("rn", fit_rn)):
    if on:
      free.append(name)
    else:
      fixed[name] = float(stars[name])
  return Spec(free=tuple(free), fixed=fixed, tie_exponents=tie_exponents and not base)


def fit(n, d, u, loss, *, spec: Spec, search: str = "wide", starts: np.ndarray | None = None,
        base_guess: dict[str, float] | None = None, delta: float = hub.DELTA) -> DataconsFit:
  """Best of all starts. search="wide" looks for R* in [0.01, 1e5]; "published" reproduces
  Muennighoff et al.'s search range [0.01, 20] (the surface has several minima, see README)."""
  if search not in SEARCHES:
    raise UserError(f"unknown search {search!r}; use one of {', '.join(SEARCHES)}")
  n, d, u, loss = check_fit_inputs(n_params=n, d_tokens=d, u_tokens=u, loss=loss,
                                   n_free=len(spec.free), law="data-constrained")
  u = np.minimum(u, d)  # a run that stopped short of one epoch saw only D unique tokens
  fun = objective(spec, n, d, u, loss, delta=delta)
  lo, hi = _bounds(spec.free, SEARCHES[search][1])
  if starts is None:
    starts = default_starts(spec, base_guess, search)
  res = multistart.multistart_minimize(fun, np.atleast_2d(starts), lower=lo, upper=hi, n_polish=4)
  off, mat = spec.matrix()
  params = _complete(off + mat @ res.x)
  at_bound = tuple(nm for i, nm in enumerate(spec.free) if nm in ("rd", "rn")
                   and (res.x[i] >= hi[i] - 1e-3 or res.x[i] <= lo[i] + 1e-3))
  pred = predict(params, n, d, u)
  r2 = 1.0 - np.sum((loss - pred) ** 2) / max(np.sum((loss - loss.mean()) ** 2), 1e-300)
  others = []
  for x, fv in res.minima[1:]:
    p = _complete(off + mat @ x)
    if (abs(fv - res.fun) <= 1e-4 * abs(res.fun)
        and abs(p["R_D_star"] / params["R_D_star"] - 1.0) < 1e-2):
      continue  # the same minimum up to a flat direction (usually R_N*)
    on_bound = [nm for i, nm in enumerate(spec.free) if nm in ("rd", "rn")
                and (x[i] >= hi[i] - 1e-3 or x[i] <= lo[i] + 1e-3)]
    others.append(dict(R_D_star=p["R_D_star"], R_N_star=p["R_N_star"], objective=fv,
                       at_bound=on_bound, x=[float(v) for v in x]))
  return DataconsFit(params=params, objective=res.fun, n_points=int(n.size), free=spec.free,
                     at_bound=at_bound, r2=float(r2), search=search, other_minima=tuple(others))


def bootstrap(n, d, u, loss, best: DataconsFit, spec: Spec, *, n_boot: int = 200, seed: int = 0,
              level: float = 0.95, delta: float = hub.DELTA) -> dict:
  """Percentile intervals and SEs of every free parameter (and R_D*, R_N*) by point resampling;
  each replicate restarts from the best fit and the other local minima, all in one batch."""
  n, d, u, loss = (np.asarray(v, dtype=np.float64) for v in (n, d, u, loss))
  u = np.minimum(u, d)
  w = boot.bootstrap_weights(n.size, n_boot, seed)
  x_best = np.array([best.params[k] for k in spec.free])
  per_starts = np.array([x_best] + [m["x"] for m in best.other_minima[:4]])
  starts = np.repeat(per_starts[None], n_boot, axis=0)
  lo, hi = _bounds(spec.free, SEARCHES[best.search][1])
  x = boot.refit(lambda w_rows: objective(spec, n, d, u, loss, weights_RxN=w_rows, delta=delta),
                 w, starts, lower=lo, upper=hi)
  samples = {nm: x[:, i] for i, nm in enumerate(spec.free)}
  if "rd" in samples:
    samples["R_D_star"] = np.exp(samples["rd"])
  if "rn" in samples:
    samples["R_N_star"] = np.exp(samples["rn"])
  se, ci = boot.summarize(samples, level)
  upper_hits = {nm: float(np.mean(samples[nm] >= hi[i] - 1e-3)) for i, nm in enumerate(spec.free)
                if nm in ("rd", "rn")}
  return dict(se=se, ci=ci, level=level, n_boot=int(x.shape[0]), frac_at_upper_bound=upper_hits,
              samples=samples)
