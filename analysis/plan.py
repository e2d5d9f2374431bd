"""python -m analysis.plan --compute=C --unique=U (--runs=DIR | --constants=NAME): per family,
the model size and epoch count that minimise predicted loss at that budget, and which family wins.

The definition is datablations' `optimal_allocation(C, U)` (Muennighoff et al. 2023, README): on
the line C = 6 N D, minimise the data-constrained law L(N, D, min(U, D)). They grid-search within a
factor 3 of the Chinchilla-optimal N; here a log grid over 3 decades either side of it, refined,
finds the law's own minimum, and one on the search edge is flagged. With --runs the law is fitted
per family (findings/law_fits.py); the loss CI is the percentile interval of the optimal loss over bootstrap
replicates (base constants and R_D*, R_N* resampled in their own stages, paired by index).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np

from analysis.findings import law_fits, points
from analysis.laws import chinchilla, datacons
from analysis.render.fmt import FAM, tok
from analysis.render.jsonable import to_jsonable
from analysis.runs import collect
from dlmscale.commands.guard import cli_main
from dlmscale.errors import UserError

CONSTANTS = {
    "muennighoff_c4": dict(label="Muennighoff et al. C4 (published)",
                           params=dict(datacons.MUENNIGHOFF_C4,
                                       rd=math.log(datacons.MUENNIGHOFF_STARS["R_D_star"]),
                                       rn=math.log(datacons.MUENNIGHOFF_STARS["R_N_star"]))),
}
# Prabhudesai et al. publish R_D* per family (512.85 MDM, 31.93 AR) but not the other constants.
UNAVAILABLE = {
    "prabhudesai_ar": "Prabhudesai et al. publish only R_D* = 31.93 for AR, not the E, A, B, "
                      "alpha, beta, R_N* the law also needs",
    "prabhudesai_mdm": "Prabhudesai et al. publish only R_D* = 512.85 for MDM, not the E, A, B, "
                       "alpha, beta, R_N* the law also needs",
}
DECADES = 3.0  # search half-width around the Chinchilla-optimal N, in decades
N_GRID, N_REFINE = 1201, 201
LAW_KEYS = datacons.FULL


def _center_log_n(theta: dict[str, np.ndarray], compute: float) -> np.ndarray:
  """log of the Chinchilla-optimal N at this compute, per parameter set."""
  return np.array([math.log(float(chinchilla.allocation(
      {k: float(theta[k][i]) for k in chinchilla.PARAMS}, compute)["N_opt"]))
                   for i in range(theta["a"].size)])


def optimum(theta: dict[str, np.ndarray], compute: float, unique: float) -> dict[str, np.ndarray]:
  """Per parameter set (arrays of length R over FULL's keys): N, D = C / 6N, epochs = D / U and
  L at the minimum on C = 6 N D, and whether it sits on the search edge."""
  th = {k: np.asarray(theta[k], dtype=np.float64).reshape(-1, 1) for k in LAW_KEYS}
  center = _center_log_n({k: v[:, 0] for k, v in th.items()}, compute)[:, None]
  half = DECADES * math.log(10.0)

  def loss_at(log_n_RxG):
    n = np.exp(log_n_RxG)
    d = compute / (6.0 * n)
    return datacons.predict(th, n, d, np.full_like(n, unique))

  log_n = center + np.linspace(-half, half, N_GRID)[None, :]
  i = np.argmin(loss_at(log_n), axis=1)
  edge = (i == 0) | (i == N_GRID - 1)
  step = 2 * half / (N_GRID - 1)
  rows = np.arange(i.size)
  fine = log_n[rows, i][:, None] + np.linspace(-step, step, N_REFINE)[None, :]
  fl = loss_at(fine)
  j = np.argmin(fl, axis=1)
  n_opt = np.exp(fine[rows, j])
  d_opt = compute / (6.0 * n_opt)
  return dict(N_opt=n_opt, D_opt=d_opt, epochs=d_opt / unique, loss=fl[rows, j], at_edge=edge)


def _as_theta(params: dict[str, float]) -> dict[str, np.ndarray]:
  return {k: np.array([float(params[k])]) for k in LAW_KEYS}


def _replicates(chin_samples: dict | None, dcons_samples: dict | None,
                dcons_params: dict[str, float]) -> dict[str, np.ndarray] | None:
  """Bootstrap parameter sets of the data-constrained law: free constants from the datacons
  resamples, a frozen base from the Chinchilla resamples (paired by index), the rest fixed."""
  d_s = dcons_samples
  if not d_s:
    return None
  c_s = chin_samples or {}
  sources = [d_s] + ([c_s] if any(k not in d_s for k in chinchilla.PARAMS) and c_s else [])
  size = min(np.asarray(v).size for s in sources for v in s.values())
  if size < 2:
    return None
  out = {}
  for k in LAW_KEYS:
    src = next((s for s in sources if k in s), None)
    if k == "beta" and src is None and "alpha" in d_s and "beta" not in d_s:
      src, k_src = d_s, "alpha"  # tied exponents
    else:
      k_src = k
    out[k] = (np.asarray(src[k_src], dtype=np.float64)[:size] if src is not None
              else np.full(size, float(dcons_params[k])))
  return out


def extrapolation(best: dict, unique: float, fitted: dict[str, list[float]]) -> list[str]:
  """Which of N, D, U lie outside the range the law was fitted on (a prediction, not a fit)."""
  want = dict(N=best["N_opt"], D=best["D_opt"], U=unique)
  return [k for k, (lo, hi) in fitted.items() if not lo * (1 - 1e-9) <= want[k] <= hi * (1 + 1e-9)]


def plan_family(label: str, params: dict[str, float], compute: float, unique: float,
                replicates: dict[str, np.ndarray] | None = None, level: float = 0.95,
                fitted: dict[str, list[float]] | None = None) -> dict:
  """fitted: the [min, max] of N, D and U over the points the law came from, if known."""
  best = {k: float(v[0]) for k, v in optimum(_as_theta(params), compute, unique).items()}
  out = dict(status="ok", source=label, N_opt=best["N_opt"], D_opt=best["D_opt"],
             epochs=best["epochs"], loss=best["loss"], at_search_edge=bool(best["at_edge"]))
  if fitted is not None:
    out.update(fitted_range=fitted, extrapolated=extrapolation(best, unique, fitted))
  if replicates is not None:
    r = optimum(replicates, compute, unique)
    ok = np.isfinite(r["loss"])
    q = (50 * (1 - level), 50 * (1 + level))
    out["ci"] = {k: [float(np.percentile(r[k][ok], q[0])), float(np.percentile(r[k][ok], q[1]))]
                 for k in ("loss", "N_opt", "epochs")}
    out.update(ci_level=level, n_boot=int(ok.sum()),
               frac_at_search_edge=float(np.mean(r["at_edge"][ok])),
               ci_note="percentiles over bootstrap refits: base constants and R_D*, R_N* "
                       "resampled in their own stages and paired by index")
  return out


def verdict(families: dict[str, dict]) -> tuple[str | None, str]:
  """The family with the lowest predicted loss if its CI clears every other's, else
  'inconclusive'; None with fewer than two families."""
  ok = {k: v for k, v in families.items() if v["status"] == "ok"}
  if len(ok) < 2:
    return None, "fewer than two families have a fitted law"
  best = min(ok, key=lambda k: ok[k]["loss"])
  if any("ci" not in v for v in ok.values()):
    return "inconclusive", "no bootstrap CIs to compare (use --n_boot > 0)"
  hi = ok[best]["ci"]["loss"][1]
  overlap = [k for k in ok if k != best and ok[k]["ci"]["loss"][0] <= hi]
  if overlap:
    names = [FAM.get(k, k) for k in [best] + overlap]
    return "inconclusive", f"the loss CIs of {' and '.join(names)} overlap"
  return best, "its loss CI lies below every other family's"


def sentence(compute: float, unique: float, families: dict[str, dict], winner, why) -> str:
  parts = []
  for fam, p in families.items():
    name = FAM.get(fam) or p.get("source", fam)
    if p["status"] != "ok":
      parts.append(f"{name}: {p['status']} ({p['reason']})")
      continue
    ci = p.get("ci", {}).get("loss")
    loss = f"{p['loss']:.3f}" + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
    edge = " — at the edge of the size search, not an optimum" if p["at_search_edge"] else ""
    far = p.get("extrapolated")
    edge += f" — extrapolated ({', '.join(far)} outside the fitted range)" if far else ""
    parts.append(f"{name}: {p['N_opt']:.3g} parameters on {p['D_opt']:.3g} tokens "
                 f"({p['epochs']:.3g} epochs), predicted loss {loss}{edge}")
  head = f"At C = {compute:.3g} FLOPs (C = 6ND) and U = {tok(unique)} unique tokens: "
  tail = "" if winner is None else (f" Winner: {FAM.get(winner, winner)} ({why})."
                                    if winner != "inconclusive" else f" Inconclusive: {why}.")
  return head + "; ".join(parts) + "." + tail


def from_runs(runs_dir: pathlib.Path, compute: float, unique: float, *, n_boot: int, seed: int,
              grid: str, param_col: str) -> dict[str, dict]:
  collected = collect.collect(runs_dir)
  collect.require_finished(collected, runs_dir)
  pts = points.clean(points.points(points.claim_runs(collected.runs), param_col=param_col))
  out = {}
  for fam, g in pts.groupby("objective"):
    chin, chin_samples = law_fits.chinchilla_family(g, n_boot=n_boot, seed=seed, grid=grid)
    dcons, dcons_samples = law_fits.datacons_family(g, chin, n_boot=n_boot, seed=seed)
    if dcons["status"] != "ok":
      out[fam] = dict(status=dcons["status"], reason=dcons["reason"])
      continue
    fitted = {k: [float(g[col].min()), float(g[col].max())]
              for k, col in (("N", "N"), ("D", "D"), ("U", "unique_tokens"))}
    out[fam] = plan_family(f"fitted on {runs_dir} ({dcons['mode']})", dcons["params"], compute,
                           unique, _replicates(chin_samples, dcons_samples, dcons["params"]),
                           fitted=fitted)
  return out


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m analysis.plan",
                               description="Best size and epochs per family at a compute and "
                                           "unique-token budget; prints JSON (sentence on stderr).")
  src = ap.add_mutually_exclusive_group(required=True)
  src.add_argument("--runs", help="grid workdir: fit the law per family on its runs")
  src.add_argument("--constants", help=f"a published set: {', '.join(CONSTANTS)}")
  ap.add_argument("--compute", type=float, required=True, help="FLOPs (C = 6 N D)")
  ap.add_argument("--unique", type=float, required=True, help="unique training tokens U")
  ap.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples (--runs)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--grid", choices=["full", "coarse"], default="full",
                  help="approach-3 starts: the 4,500-point Besiroglu grid or a 432-point subset")
  ap.add_argument("--params", choices=["non_embedding", "total"], default="non_embedding",
                  help="which parameter count is N in the fits")
  args = ap.parse_args(argv)

  def body():
    for name in ("compute", "unique"):
      v = getattr(args, name)
      if not (math.isfinite(v) and v > 0):
        raise UserError(f"--{name}={v:g} must be a positive number")
    if args.n_boot < 0:
      raise UserError("--n_boot must be >= 0")
    if args.constants is not None:
      if args.constants in UNAVAILABLE:
        raise UserError(f"--constants={args.constants}: {UNAVAILABLE[args.constants]}; use "
                        f"--runs=DIR or one of {', '.join(CONSTANTS)}")
      if args.constants not in CONSTANTS:
        raise UserError(f"--constants={args.constants!r} is not a published set; use one of "
                        f"{', '.join(CONSTANTS)}")
      c = CONSTANTS[args.constants]
      fams = {args.constants: plan_family(c["label"], c["params"], args.compute, args.unique)}
    else:
      runs = pathlib.Path(args.runs)
      if not runs.is_dir():
        raise UserError(f"--runs={args.runs!r} is not a directory; pass the grid workdir")
      fams = from_runs(runs, args.compute, args.unique, n_boot=args.n_boot, seed=args.seed,
                       grid=args.grid, param_col=f"params_{args.params}")
      if not any(p["status"] == "ok" for p in fams.values()):
        raise UserError("no family's data-constrained law can be fitted from these runs ("
                        + "; ".join(f"{k}: {p['reason']}" for k, p in fams.items())
                        + "); add runs (see analysis.report's fits section)")
    winner, why = verdict(fams)
    out = dict(compute=args.compute, unique_tokens=args.unique, constraint="C = 6 N D",
               definition="argmin over N of L(N, C/6N, U) (datablations optimal_allocation)",
               loss_note="validation nats/token; MDM's is an ELBO bound on its NLL",
               families=fams, winner=winner, winner_reason=why)
    out["sentence"] = sentence(args.compute, args.unique, fams, winner, why)
    print(json.dumps(to_jsonable(out), indent=1))
    print(out["sentence"], file=sys.stderr)

  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
