"""Scaling-law fits per family (AR and MDM separately) on a grid's points.

Chinchilla approach 3 uses single-epoch points only (the form assumes fresh data); its constants
become the frozen base of the data-constrained law, which is then fitted on every point
(Muennighoff et al.'s recipe). Too few single-epoch points -> a joint fit of all seven constants if
the grid is large enough, else "not identifiable". R_D* needs repeated-data runs; R_N* needs runs
with more parameters than their budget can use. Kaplan's laws (laws/kaplan.py) use every point, with
D the dataset size and the early-stopped loss. Missing evidence is reported, never guessed, and a
fit whose optimum the data do not pin down (identify.py) is reported as not identifiable.

The data-constrained law is monotone in D: it cannot describe a loss that rises with repetition.
By default it is fitted on each family's epoch envelope, the best loss reached with at most E
epochs at each (N, U) ("envelope"); "final" fits the final losses instead.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.laws import approaches, chinchilla, datacons, identify, kaplan, multistart
from dlmscale.errors import UserError

TARGETS = {"envelope": "the epoch envelope (best loss reached with at most E epochs at each N, U)",
           "final": "the final loss of each run"}
COARSE_AXES = (np.array([0.0, 5.0, 10.0, 20.0]), np.array([0.0, 5.0, 10.0, 20.0]),
               np.array([-1.0, 0.0, 1.0]), np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]))


class FamilyFit(NamedTuple):
  """One law's findings for one family (what fits.json holds) and, when the fit is identified and
  bootstrapped, its per-replicate constants (for analysis.plan and the R_D* ratio; not in JSON)."""
  result: dict
  samples: dict[str, np.ndarray] | None = None


def _distinct(v) -> int:
  return int(np.unique(np.round(np.log(np.asarray(v, dtype=np.float64)), 6)).size)


def approach1_family(curves: pd.DataFrame | None) -> dict:
  """Approach 1 on the eval curves of single-epoch runs (columns run_name, N, flops, loss)."""
  if curves is None or curves.empty:
    return dict(status="not available", reason="no single-epoch eval curves")
  try:
    return dict(status="ok", **approaches.approach1(curves))
  except UserError as e:
    return dict(status="not available", reason=str(e))


def chinchilla_family(pts: pd.DataFrame, *, n_boot: int, seed: int, grid: str,
                      curves: pd.DataFrame | None = None) -> FamilyFit:
  one = pts[pts["epochs"] <= 1.0 + 1e-9]
  n_pts = len(one)
  n_sizes = _distinct(one["N"]) if n_pts else 0
  n_tokens = _distinct(one["D"]) if n_pts else 0
  if n_pts <= len(chinchilla.PARAMS) or n_sizes < 3 or n_tokens < 3:
    # E, B and beta cannot be told apart from two token counts (likewise E, A, alpha).
    return FamilyFit(dict(status="not identifiable",
                reason=f"{n_pts} single-epoch point(s) over {n_sizes} model size(s) and "
                       f"{n_tokens} token count(s); approach 3 needs > 5 points over >= 3 sizes "
                       "and >= 3 token counts (budgets)", approach1=approach1_family(curves)))
  starts = None if grid == "full" else multistart.grid_starts(COARSE_AXES)
  n, d, l = one["N"].to_numpy(), one["D"].to_numpy(), one["loss"].to_numpy()
  fit = chinchilla.fit(n, d, l, starts=starts)
  early = identify.e_reason(fit.params) + identify.exponent_reasons(fit.params)
  if early:  # no allocation or bootstrap from a degenerate optimum
    return FamilyFit(_not_identifiable(dict(status="ok", n_points=n_pts, params=fit.params,
                                            objective=fit.objective,
                                            approach1=approach1_family(curves)), early))
  alloc = chinchilla.allocation(fit.params, 1.0)
  out = dict(status="ok", n_points=n_pts, params=fit.params, objective=fit.objective,
             n_starts=fit.n_starts,
             allocation_exponent=fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"]),
             allocation=dict(G=alloc["G"], N_opt_exponent=alloc["a_N_exponent"],
                             D_opt_exponent=alloc["b_D_exponent"],
                             formula="N_opt = G (C/6)^a, D_opt = (C/6)^b / G"),
             approach1=approach1_family(curves))
  samples = None
  if n_boot > 0:
    boot = chinchilla.bootstrap(n, d, l, fit, n_boot=n_boot, seed=seed)
    out["bootstrap"] = dict(se=boot.se, ci=boot.ci, level=boot.level, n_boot=boot.n_boot)
    samples = boot.samples
  reasons = (identify.zero_width_reasons(out.get("bootstrap", {}).get("ci"), chinchilla.PARAMS)
             + identify.spread_reasons(fit.params, out.get("bootstrap"),
                                       chinchilla.EXPONENT_RANGE))
  if reasons:
    return FamilyFit(_not_identifiable(out, reasons))
  try:
    out["approach2"] = approaches.approach2(n, d, l, one["C"].to_numpy(), min_groups=3)
  except UserError as e:
    out["approach2"] = dict(status="not available", reason=str(e))
  return FamilyFit(out, samples)


def _not_identifiable(out: dict, reasons: list[str]) -> dict:
  """The fit kept for inspection under `degenerate_fit`, never as a headline number."""
  keep = {k: v for k, v in out.items() if k not in ("status", "approach1")}
  res = dict(status="not identifiable", reason="; ".join(reasons), degenerate_fit=keep)
  if "approach1" in out:
    res["approach1"] = out["approach1"]
  return res


def envelope(pts: pd.DataFrame) -> pd.DataFrame:
  """Each point's loss replaced by the best loss reached with at most its E epochs at its
  (objective, N, U): the running minimum over E of each run's best validation loss."""
  out = []
  for _, g in pts.groupby(["objective", "unique_tokens", "model_size"], sort=False):
    g = g.sort_values("epochs").copy()
    best = g["best_loss"].to_numpy(dtype=np.float64)
    best_se = g["best_se"].to_numpy(dtype=np.float64)
    at = np.array([int(np.argmin(best[:i + 1])) for i in range(best.size)])
    g["loss"], g["se"] = best[at], best_se[at]
    out.append(g)
  return pd.concat(out) if out else pts.copy()


def family_seed(seed: int, family: str) -> int:
  """An independent bootstrap stream per family: the same seed would draw the same resample
  indices for both (equal point counts) and correlate the families' intervals."""
  return int(np.random.SeedSequence([int(seed), zlib.crc32(family.encode())]).generate_state(1)[0])


def _r_n_identifiable(pts: pd.DataFrame, base: dict) -> bool:
  n_u = chinchilla.d_to_n_opt(base, pts["unique_tokens"].to_numpy())
  return bool(np.any(pts["N"].to_numpy() > n_u * 1.01))


def datacons_family(pts: pd.DataFrame, chin: dict, *, n_boot: int, seed: int,
                    target: str = "envelope") -> FamilyFit:
  """The data-constrained law on `target` (TARGETS) of one family's points."""
  if target == "envelope":
    pts = envelope(pts)
  n, d, u, l = (pts[c].to_numpy(dtype=np.float64) for c in ("N", "D", "unique_tokens", "loss"))
  if not np.any(d > u * 1.01):
    return FamilyFit(dict(status="not identifiable", reason="no run repeats data (all E <= 1), "
                                                             "so R_D* has nothing to fit"))
  if chin.get("status") == "ok":
    base = {k: chin["params"][k] for k in chinchilla.PARAMS}
    mode = "frozen base (approach 3 on single-epoch points)"
  elif len(pts) >= 10:
    base = None
    mode = "joint (too few single-epoch points for a separate base)"
  else:
    return FamilyFit(dict(status="not identifiable",
                          reason=f"{len(pts)} points and no single-epoch base fit; need a base fit "
                                 "(> 5 single-epoch points) or >= 10 points for a joint fit"))
  fit_rn = _r_n_identifiable(pts, base) if base else True
  spec = datacons.make_spec(base=base, fit_rn=fit_rn)
  if len(pts) <= len(spec.free):
    return FamilyFit(dict(status="not identifiable",
                          reason=f"{len(pts)} points for {len(spec.free)} free constants"))
  fit = datacons.fit(n, d, u, l, spec=spec, search="wide")
  out = dict(status="ok", mode=mode, target=target, n_points=int(len(pts)), params=fit.params,
             objective=fit.objective, r2=fit.r2, free=list(fit.free), at_bound=list(fit.at_bound),
             other_minima=[{k: v for k, v in m.items() if k != "x"} for m in fit.other_minima],
             R_N_star_identifiable=fit_rn)
  if not fit_rn:
    out["R_N_star_note"] = ("not identifiable: no run has more parameters than its unique "
                            "budget can use compute-optimally; R_N* held at 5 (no effect)")
  samples = None
  if n_boot > 0:
    boot = datacons.bootstrap(n, d, u, l, fit, spec, n_boot=n_boot, seed=seed)
    out["bootstrap"] = {k: v for k, v in boot.items() if k != "samples"}
    samples = boot["samples"]
  # R_N* is its own quantity: on its bound (no excess-parameter penalty detectable) or flat, it is
  # not identified, but R_D* and the base still are. Anything else degenerate sinks the whole fit.
  lo, hi = datacons.search_bounds(fit.free, fit.search)
  ci = out.get("bootstrap", {}).get("ci")
  others = [k for k in fit.free if k != "rn"]
  sel = [i for i, k in enumerate(fit.free) if k != "rn"]
  exps = {k: (lo[i], hi[i]) for i, k in enumerate(fit.free) if k in ("alpha", "beta")}
  reasons = (identify.bound_reasons(fit.params, others, lo[sel], hi[sel]) + identify.e_reason(fit.params)
             + identify.zero_width_reasons(ci, others + ["R_D_star"])
             + identify.spread_reasons(fit.params, out.get("bootstrap"), exps))
  if reasons:
    return FamilyFit(_not_identifiable(out, reasons))
  if "rn" in fit.free:
    i = fit.free.index("rn")
    rn_reasons = (identify.bound_reasons(fit.params, ["rn"], lo[i:i + 1], hi[i:i + 1])
                  + identify.zero_width_reasons(ci, ["rn"]))
    if rn_reasons:
      out["R_N_star_identifiable"] = False
      out["R_N_star_note"] = "not identifiable: " + "; ".join(rn_reasons)
  return FamilyFit(out, samples)


def kaplan_family(pts: pd.DataFrame, *, n_boot: int, seed: int) -> dict:
  """Kaplan's laws with D = the dataset size (unique tokens seen) and the early-stopped loss,
  as Kaplan et al. measured them; L(C_min) on the final losses against compute."""
  d = np.minimum(pts["unique_tokens"].to_numpy(dtype=np.float64), pts["D"].to_numpy())
  best = pts["best_loss"].to_numpy(dtype=np.float64)
  loss = np.where(np.isfinite(best), best, pts["loss"].to_numpy(dtype=np.float64))
  return kaplan.fit_all(pts["N"].to_numpy(), d, loss, pts["C"].to_numpy(),
                             loss_c=pts["loss"].to_numpy(), n_boot=n_boot, seed=seed)


def family_fits(pts: pd.DataFrame, *, curves: pd.DataFrame | None = None, n_boot: int = 200,
                seed: int = 0, grid: str = "full", target: str = "envelope") -> dict:
  """curves: eval points of single-epoch runs (objective, run_name, N, flops, loss) for
  approach 1. target: what the data-constrained law is fitted on (TARGETS)."""
  if target not in TARGETS:
    raise UserError(f"unknown datacons target {target!r}; use one of {', '.join(TARGETS)}")
  chin, dcons, kap = {}, {}, {}
  rd_samples = {}
  for obj, g in pts.groupby("objective"):
    fam_curves = None if curves is None else curves[curves["objective"] == obj]
    fseed = family_seed(seed, str(obj))
    chin[obj] = chinchilla_family(g, n_boot=n_boot, seed=fseed, grid=grid, curves=fam_curves).result
    dcons[obj], d_samples = datacons_family(g, chin[obj], n_boot=n_boot, seed=fseed, target=target)
    rd_samples[obj] = (d_samples or {}).get("R_D_star")
    kap[obj] = kaplan_family(g, n_boot=n_boot, seed=fseed)
  if all(dcons.get(k, {}).get("status") == "ok" for k in ("ar", "mdm")):
    ratio = dict(value=dcons["mdm"]["params"]["R_D_star"] / dcons["ar"]["params"]["R_D_star"])
    s_ar, s_mdm = rd_samples["ar"], rd_samples["mdm"]
    ci = identify.ratio_interval(s_mdm, s_ar) if s_ar is not None and s_mdm is not None else None
    if ci is not None:
      ratio["ci"] = ci
    ratio["verdict"] = identify.ratio_verdict(ci)
  else:
    why = [f"{k}: {dcons.get(k, {}).get('status', 'no runs')}" for k in ("ar", "mdm")
           if dcons.get(k, {}).get("status") != "ok"]
    ratio = dict(status="not available", reason="R_D* is not identified for both families ("
                 + "; ".join(why or ["a family is missing"]) + ")")
  return dict(chinchilla=chin, datacons=dcons, kaplan=kap, R_D_star_ratio_mdm_over_ar=ratio,
              datacons_target=dict(name=target, description=TARGETS[target]))
