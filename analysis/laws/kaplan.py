"""Kaplan et al. 2020 laws: L(N), L(D), L(C_min) power laws and the joint L(N, D).

L(X) = (X_c / X)^a_X is fitted on the points that X limits: those setting a new lowest
(early-stopped) loss as N grows for L(N), as the dataset size grows for L(D), as compute grows for
L(C_min) (on a grid: the lowest loss per size, per dataset, per compute). The joint
L(N, D) = [(N_c/N)^(a_N/a_D) + D_c/D]^a_D uses every point.
All four are fitted like the other laws here: Huber loss of log residuals (logspace.py), multistart
L-BFGS (multistart.py), point-resampling bootstrap in one batch. Parameters live in boxes; one
that ends on its box edge (`at_bound`), belongs to a joint-law term that is negligible at every
point, or is an exponent the bootstrap does not pin down (identify.spread_reason; with its scale),
is listed in `unidentified` and is not a finding.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.laws import bootstrap as boot
from analysis.laws import identify, multistart
from analysis.laws import logspace as hub
from analysis.laws.checks import check_fit_inputs
from analysis.laws.crossover import frontier
from dlmscale.errors import UserError

PF_DAY = 1e15 * 86400.0  # FLOPs in one petaflop/s-day, Kaplan's compute unit
# Kaplan et al. 2020 (WebText2, non-embedding N, nats/token); the sets quoted in the reference
# README. C_c is in FLOPs here (3.1e8 PF-days).
PUBLISHED = dict(
    N=dict(a_N=0.076, N_c=8.8e13),
    D=dict(a_D=0.095, D_c=5.4e13),
    C=dict(a_C=0.050, C_c=3.1e8 * PF_DAY),
    joint=dict(a_N=0.076, a_D=0.103, N_c=6.4e13, D_c=1.8e13),
)
OVERFIT_RULE = dict(coef=5e3, exponent=0.74)  # overfitting is small while D >~ 5e3 N^0.74

FORMS = ("N", "D", "C", "joint")
EXP_BOUNDS = (1e-3, 3.0)
LOG_SCALE_BOUNDS = (-20.0, 140.0)  # log X_c: X_c from 2e-9 to 6e60
_JOINT_AXES = ((0.05, 0.1, 0.3, 0.6), (0.05, 0.1, 0.3, 0.6),
               tuple(np.log(10.0) * np.array([6.0, 10.0, 14.0, 18.0])),
               tuple(np.log(10.0) * np.array([6.0, 10.0, 14.0, 18.0])))
_POWER_EXPONENT_STARTS = (0.01, 0.05, 0.2, 1.0)


@dataclasses.dataclass(frozen=True)
class KaplanFit:
  form: str  # one of FORMS
  x: np.ndarray  # power: [a, k] with log L = k - a log X; joint: [a_N, a_D, log N_c, log D_c]
  params: dict[str, float]
  objective: float
  n_points: int
  at_bound: tuple[str, ...]
  unidentified: tuple[str, ...]  # on a bound, or belonging to a term that never matters

  def named(self) -> dict:
    return dict(form=self.form, params=self.params, objective=self.objective,
                n_points=self.n_points, at_bound=list(self.at_bound),
                unidentified=list(self.unidentified))


def power_objective(log_x: np.ndarray, log_l: np.ndarray, weights_RxN: np.ndarray | None = None,
                    delta: float = hub.DELTA) -> multistart.BatchFun:
  """log L = k - a log X: linear in (a, k), so the Huber objective is convex."""

  def fun(x_SxP: np.ndarray, rows: np.ndarray):
    a, k = x_SxP[:, 0:1], x_SxP[:, 1:2]
    r = k - a * log_x - log_l
    w = 1.0 if weights_RxN is None else weights_RxN[rows]
    h, hp = hub.huber_and_grad(r, delta)
    hp = hp * w
    return np.sum(h * w, axis=1), np.stack([-(hp @ log_x), hp.sum(1)], axis=1)

  return fun


def joint_objective(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                    weights_RxN: np.ndarray | None = None,
                    delta: float = hub.DELTA) -> multistart.BatchFun:
  """log L = a_D logsumexp((a_N/a_D)(log N_c - log N), log D_c - log D), with its gradient."""

  def fun(x_SxP: np.ndarray, rows: np.ndarray):
    a_n, a_d, lnc, ldc = (x_SxP[:, i:i + 1] for i in range(4))
    z1 = (a_n / a_d) * (lnc - log_n)
    z2 = ldc - log_d
    s, (w1, w2) = hub.logsumexp_softmax(z1, z2)
    r = a_d * s - log_l
    w = 1.0 if weights_RxN is None else weights_RxN[rows]
    h, hp = hub.huber_and_grad(r, delta)
    hp = hp * w
    g = np.stack([(hp * w1 * (lnc - log_n)).sum(1), (hp * (s - w1 * z1)).sum(1),
                  (hp * w1).sum(1) * a_n[:, 0], (hp * w2).sum(1) * a_d[:, 0]], axis=1)
    return np.sum(h * w, axis=1), g

  return fun


def _bounds(form: str) -> tuple[np.ndarray, np.ndarray]:
  if form == "joint":
    return (np.array([EXP_BOUNDS[0]] * 2 + [LOG_SCALE_BOUNDS[0]] * 2),
            np.array([EXP_BOUNDS[1]] * 2 + [LOG_SCALE_BOUNDS[1]] * 2))
  return np.array([EXP_BOUNDS[0], -np.inf]), np.array([EXP_BOUNDS[1], np.inf])


def _named(form: str, x: np.ndarray) -> dict[str, float]:
  if form == "joint":
    return dict(a_N=float(x[0]), a_D=float(x[1]), N_c=float(np.exp(x[2])),
                D_c=float(np.exp(x[3])), log_N_c=float(x[2]), log_D_c=float(x[3]))
  a, log_xc = float(x[0]), float(x[1] / x[0])
  with np.errstate(over="ignore"):  # an exponent on its lower bound can make X_c overflow
    return {f"a_{form}": a, f"{form}_c": float(np.exp(log_xc)), f"log_{form}_c": log_xc}


def _edge_names(form: str, x_KxP: np.ndarray) -> list[list[str]]:
  """Per row, the parameters on (within 1e-3 of) a box edge; for power laws log X_c = k / a is
  bounded through the exponent and the scale bounds."""
  lo, hi = _bounds(form)
  names = ["a_N", "a_D", "log_N_c", "log_D_c"] if form == "joint" else [f"a_{form}"]
  out = []
  for x in np.atleast_2d(x_KxP):
    tol = [1e-3 if nm.startswith("a_") else 0.05 for nm in names]
    hits = [nm for i, nm in enumerate(names) if x[i] <= lo[i] + tol[i] or x[i] >= hi[i] - tol[i]]
    if form != "joint":
      lxc = x[1] / x[0]
      if not LOG_SCALE_BOUNDS[0] <= lxc <= LOG_SCALE_BOUNDS[1]:
        hits.append(f"log_{form}_c")
    out.append(hits)
  return out


def negligible_terms(params: dict[str, float], n, d, share: float = 1e-3) -> list[str]:
  """Joint law: the parameters of a term below `share` of the bracket at every point (its
  exponent and scale then only need to keep it small, so neither is measured)."""
  t_n = (params["N_c"] / np.asarray(n)) ** (params["a_N"] / params["a_D"])
  t_d = params["D_c"] / np.asarray(d)
  out = []
  if np.max(t_n / (t_n + t_d)) < share:
    out += ["a_N", "log_N_c"]
  if np.max(t_d / (t_n + t_d)) < share:
    out += ["a_D", "log_D_c"]
  return out


def _setup(form: str, x_cols: tuple[np.ndarray, ...], loss: np.ndarray, weights=None):
  logs = [np.log(v) for v in x_cols]
  if form == "joint":
    return joint_objective(logs[0], logs[1], np.log(loss), weights_RxN=weights)
  return power_objective(logs[0], np.log(loss), weights_RxN=weights)


def _starts(form: str, x_cols, loss) -> np.ndarray:
  if form == "joint":
    return multistart.grid_starts(_JOINT_AXES)
  a = np.array(_POWER_EXPONENT_STARTS)
  k = np.mean(np.log(loss)) + a * np.mean(np.log(x_cols[0]))  # through the data's centroid
  return np.stack([a, k], axis=1)


def fit(form: str, x_cols: tuple[np.ndarray, ...], loss) -> KaplanFit:
  """x_cols: (N,), (D,) or (C,) for a power law, (N, D) for the joint law."""
  names = ("n_params", "d_tokens") if form == "joint" else ("x",)
  *x_cols, loss = check_fit_inputs(n_free=4 if form == "joint" else 2, law=f"Kaplan L({form})",
                                   **dict(zip(names, x_cols)), loss=loss)
  if form != "joint" and _distinct(x_cols[0]) < 3:
    raise UserError(f"Kaplan L({form}) needs >= 3 distinct x values, got "
                    f"{_distinct(x_cols[0])}; a power law through fewer is not a measurement")
  fun = _setup(form, tuple(x_cols), loss)
  lo, hi = _bounds(form)
  # one polish: the power laws are convex, and the joint law's valley (a_D against D_c) is so
  # flat that each polish runs ~1,000 scipy iterations; the best batched end point is polished
  res = multistart.multistart_minimize(fun, _starts(form, x_cols, loss), lower=lo, upper=hi,
                                       n_polish=1)
  params = _named(form, res.x)
  at_bound = _edge_names(form, res.x)[0]
  weak = negligible_terms(params, *x_cols) if form == "joint" else []
  return KaplanFit(form=form, x=res.x, params=params, objective=res.fun, n_points=int(loss.size),
                   at_bound=tuple(at_bound),
                   unidentified=tuple(dict.fromkeys(at_bound + weak)))


def bootstrap(form: str, x_cols: tuple[np.ndarray, ...], loss, best: KaplanFit, *,
              n_boot: int = 200, seed: int = 0, level: float = 0.95,
              n_grid_starts: int = 4) -> dict:
  """Percentile CIs and SEs by point resampling; each replicate restarts from the best fit (and,
  for the non-convex joint law, a few random grid starts), all rows of one batched L-BFGS."""
  x_cols = tuple(np.asarray(v, dtype=np.float64) for v in x_cols)
  loss = np.asarray(loss, dtype=np.float64)
  w = boot.bootstrap_weights(loss.size, n_boot, seed)
  per = 1 + (n_grid_starts if form == "joint" else 0)
  starts = np.repeat(best.x[None, None, :], n_boot, axis=0).repeat(per, axis=1)
  if per > 1:
    grid = multistart.grid_starts(_JOINT_AXES)
    rng = np.random.default_rng(seed + 1)
    for j in range(1, per):
      starts[:, j] = grid[rng.integers(0, grid.shape[0], size=n_boot)]
  lo, hi = _bounds(form)
  x = boot.refit(lambda w_rows: _setup(form, x_cols, loss, weights=w_rows), w, starts,
                 lower=lo, upper=hi)
  with np.errstate(over="ignore", invalid="ignore"):  # X_c = exp(k / a) overflows as a -> 0
    named = [_named(form, row) for row in x]
    samples = {k: np.array([p[k] for p in named]) for k in (named[0] if named else {})}
    se, ci = boot.summarize(samples, level)
  edges = _edge_names(form, x) if x.size else []
  hit_names = sorted({nm for row in edges for nm in row})
  return dict(se=se, ci=ci, level=level, n_boot=int(x.shape[0]),
              frac_at_bound={nm: float(np.mean([nm in row for row in edges]))
                             for nm in hit_names})


def predict(form: str, params: dict[str, float], *x_cols) -> np.ndarray:
  if form == "joint":
    n, d = (np.asarray(v, dtype=np.float64) for v in x_cols)
    return ((params["N_c"] / n) ** (params["a_N"] / params["a_D"])
            + params["D_c"] / d) ** params["a_D"]
  x = np.asarray(x_cols[0], dtype=np.float64)
  return (params[f"{form}_c"] / x) ** params[f"a_{form}"]


# --- which points each law is fitted on -----------------------------------------------------------

def frontier_points(x, loss) -> tuple[np.ndarray, np.ndarray]:
  """The points that set a new lowest loss as x grows (crossover.frontier's knots): the lowest
  loss per x on a grid, and on scattered x only the runs that x limits, not smaller models or
  shorter runs sitting above the envelope."""
  fr = frontier(x, loss)
  log_x, fl = fr.log_c, fr.loss
  if fl.size > 1 and fl[-1] == fl[-2]:  # the flat extension to the largest x tried
    log_x, fl = log_x[:-1], fl[:-1]
  return np.exp(log_x), fl


def _distinct(v) -> int:
  return int(np.unique(np.round(np.log(np.asarray(v, dtype=np.float64)), 6)).size)


_SCALE_OF = {"a_N": "N_c", "a_D": "D_c", "a_C": "C_c"}


def spread_unidentified(params: dict[str, float], boot: dict) -> dict[str, str]:
  """Exponents the bootstrap does not pin down (identify.spread_reason over EXP_BOUNDS), and the
  scale each one carries (X_c means nothing without its exponent), each with why."""
  out = {}
  for a in (k for k in params if k in _SCALE_OF):
    why = identify.spread_reason(a, params[a], boot.get("se", {}).get(a),
                                 boot.get("ci", {}).get(a), EXP_BOUNDS)
    if why:
      out[a] = why
      out[_SCALE_OF[a]] = f"its exponent {a} is not identified"
  return out


def _one(form: str, x_cols, loss, n_boot: int, seed: int, what: str) -> dict:
  fit_ = fit(form, x_cols, loss)
  out = dict(status="ok", points=what, **fit_.named())
  if n_boot > 0:
    out["bootstrap"] = bootstrap(form, x_cols, loss, fit_, n_boot=n_boot, seed=seed)
    why = spread_unidentified(fit_.params, out["bootstrap"])
    out["unidentified"] = list(dict.fromkeys(out["unidentified"] + list(why)))
    out["unidentified_why"] = why
  out["published"] = PUBLISHED[form]
  return out


def fit_all(n, d, loss, c=None, *, loss_c=None, n_boot: int = 200, seed: int = 0) -> dict:
  """The four Kaplan fits on one family's points. d is the dataset size (unique tokens, the
  runs early-stopped), c the compute each run spent (default 6 N D) and loss_c the loss it ended
  at (default loss). A form without enough distinct values is "not identifiable", with why."""
  n, d, loss = check_fit_inputs(n_params=n, d_tokens=d, loss=loss, n_free=0, law="Kaplan")
  c = 6.0 * n * d if c is None else check_fit_inputs(n_params=n, compute=c, n_free=0,
                                                     law="Kaplan")[1]
  loss_c = loss if loss_c is None else check_fit_inputs(c=c, loss=loss_c, n_free=0,
                                                       law="Kaplan L(C)")[1]
  out: dict[str, dict] = {}
  for form, x, l, what in (("N", n, loss, "loss frontier over model size (size-limited)"),
                           ("D", d, loss, "loss frontier over dataset size (data-limited)"),
                           ("C", c, loss_c, "loss frontier over compute (C_min)")):
    xs, ls = frontier_points(x, l)
    if xs.size < 3:
      out[form] = dict(status="not identifiable",
                       reason=f"{xs.size} point(s) on the loss frontier over {form}; a power law "
                              "needs >= 3")
      continue
    if form == "C" and _distinct(n) < 2:
      out[form] = dict(status="not identifiable",
                       reason="1 model size: its compute frontier is that size's own curve, not "
                              "the envelope over sizes that C_min is; needs >= 2 sizes")
      continue
    out[form] = _one(form, (xs,), ls, n_boot, seed, what)
  n_sz, n_d = _distinct(n), _distinct(d)
  if n.size <= 4 or n_sz < 3 or n_d < 3:
    out["joint"] = dict(status="not identifiable",
                        reason=f"{n.size} point(s) over {n_sz} size(s) and {n_d} dataset "
                               "size(s); L(N, D) needs > 4 points over >= 3 of each")
  else:
    out["joint"] = _one("joint", (n, d), loss, n_boot, seed, "all points")
  free = d >= OVERFIT_RULE["coef"] * n ** OVERFIT_RULE["exponent"]
  out["overfit_rule"] = dict(rule="D >= 5e3 N^0.74", n_points=int(n.size),
                             n_satisfying=int(free.sum()))
  return out
