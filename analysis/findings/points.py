"""Grid points: the runs table averaged over seeds, and each point's per-sequence losses.

Everything here is plain data so `fits.json`, the plots and `report.md` read the same numbers. Seeds
of one grid point are averaged; their spread enters the standard error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import paired
from analysis.runs import collect

# A grid point: runs that differ only in seed. Label noise and token orders make points of their
# own sweeps (the study's claims use the clean, plain points: see `clean`).
POINT_KEYS = ["objective", "unique_tokens", "model_size", "epochs", "label_noise", "num_orders"]


def _combine_se(losses: np.ndarray, ses: np.ndarray) -> float:
  """SE of a mean over seeds: the eval SE (shared validation set) plus the seed spread."""
  n = losses.size
  eval_se = float(np.sqrt(np.nanmean(ses ** 2))) if np.isfinite(ses).any() else 0.0
  seed_var = float(np.var(losses, ddof=1)) / n if n > 1 else 0.0
  return float(np.sqrt(eval_se ** 2 + seed_var))


def claim_runs(runs: pd.DataFrame) -> pd.DataFrame:
  """Runs scored on the validation set the claims use (not learning-rate sweeps on the tuning set)."""
  return runs[runs["eval_set"].astype(str) != collect.TUNING_SET]


def clean(pts: pd.DataFrame) -> pd.DataFrame:
  """The study's own points: no label noise, plain left-to-right AR."""
  if pts.empty:
    return pts
  return pts[(pts["label_noise"] == 0) & (pts["num_orders"] == 1)]


def _roles(runs: pd.DataFrame) -> pd.Series:
  return (runs["role"] if "role" in runs.columns else pd.Series("", index=runs.index)).fillna("").astype(str)


def annealed(done: pd.DataFrame) -> pd.DataFrame:
  """Finished runs as grid points: a WSD trunk is a curve, not a point (it never anneals), and a
  cooldown branch is read at its end, the annealed point for its E (its best is its end)."""
  role = _roles(done)
  out = done[role != "trunk"].copy()
  branch = (role[out.index] == "branch").to_numpy()
  if branch.any():
    for best, end in (("best_eval_loss", "final_eval_loss"), ("best_eval_loss_se", "final_eval_loss_se"),
                      ("best_step", "final_eval_step"), ("best_epoch", "epochs"), ("best_flops", "flops")):
      out.loc[branch, best] = out.loc[branch, end]
  return out


def points(runs: pd.DataFrame, param_col: str = "params_non_embedding") -> pd.DataFrame:
  """One row per grid point (POINT_KEYS) of finished runs, seeds averaged (WSD: `annealed`)."""
  done = annealed(runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])])
  rows = []
  for key, g in done.groupby(POINT_KEYS, dropna=False, sort=True):
    loss = g["final_eval_loss"].to_numpy(dtype=np.float64)
    se = g["final_eval_loss_se"].to_numpy(dtype=np.float64)
    best = g["best_eval_loss"].to_numpy(dtype=np.float64)
    best_se = g["best_eval_loss_se"].to_numpy(dtype=np.float64)
    rows.append(dict(
        zip(POINT_KEYS, key), N=float(np.nanmedian(g[param_col])),
        N_total=float(np.nanmedian(g["params_total"])), D=float(g["tokens_seen"].mean()),
        C=float(g["flops"].mean()),
        C_6ND=6.0 * float(np.nanmedian(g[param_col])) * float(g["tokens_seen"].mean()),
        loss=float(loss.mean()), se=_combine_se(loss, se),
        best_loss=float(np.nanmean(best)), best_se=_combine_se(best, best_se),
        best_epoch=float(np.nanmean(g["best_epoch"])), best_flops=float(np.nanmean(g["best_flops"])),
        lr=float(np.nanmedian(pd.to_numeric(g["lr"], errors="coerce")))
        if pd.to_numeric(g["lr"], errors="coerce").notna().any() else float("nan"),
        n_seeds=int(len(g)), annealed=bool((_roles(g) == "branch").all()),
        mc_accuracy=float(np.nanmean(g["mc_accuracy"])) if g["mc_accuracy"].notna().any()
        else float("nan"),
        runs=",".join(map(str, g["run_name"]))))
  return pd.DataFrame(rows)


class PointRecords(dict):
  """Per grid point (POINT_KEYS), the seed-mean per-sequence losses at its runs' final
  evaluations; `best` holds those at each run's best evaluation, so a rise from a run's best to
  its end pairs the two over the same sequences (epoch_findings)."""

  def __init__(self, final=(), best=None):
    super().__init__(final)
    self.best: dict[tuple, dict] = dict(best or {})


def point_records(runs: pd.DataFrame, pts: pd.DataFrame) -> PointRecords:
  """Per grid point (POINT_KEYS), the seed-mean per-sequence losses of its runs' final evals
  (points whose runs saved none are left out: their comparisons fall back to independent SEs),
  and in `.best` those of their best evals."""
  done = annealed(runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])])
  final, best = {}, {}
  for key, g in done.groupby(POINT_KEYS, dropna=False, sort=True):
    rec = paired.mean_of([paired.load(r.run_dir, r.final_eval_step) for r in g.itertuples()])
    if rec is not None:
      final[tuple(key)] = rec
    at_best = paired.mean_of([paired.load(r.run_dir, getattr(r, "best_step", None))
                              for r in g.itertuples()])
    if at_best is not None:
      best[tuple(key)] = at_best
  return PointRecords(final, best)


def point_key(row) -> tuple:
  """The grid point a points-table row (or run) belongs to; keys it lacks read as None."""
  return tuple(row.get(k) for k in POINT_KEYS)


# One evaluation along a grid point's runs: the point plus the step it was read at.
CURVE_KEYS = POINT_KEYS + ["step"]


def curve_key(row) -> tuple:
  """The (grid point, step) a curve-points row belongs to (steps as float, as curves.csv reads)."""
  return tuple(row.get(k) for k in POINT_KEYS) + (float(row.get("step")),)


def _clean_eval_rows(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
  """Eval rows of finished clean runs, with the run's grid-point columns and run_dir joined on. A WSD
  trunk gives every evaluation (the curve), a cooldown branch only its end (the annealed point)."""
  done = clean(claim_runs(runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]))
  if done.empty or curves.empty:
    return pd.DataFrame()
  ev = curves[(curves["split"] == "eval") & curves["run_name"].isin(set(done["run_name"]))]
  ev = ev.dropna(subset=["loss", "step", "flops", "tokens_seen"])
  ends = dict(zip(done["run_name"][_roles(done) == "branch"], done["final_eval_step"][_roles(done) == "branch"]))
  ev = ev[[ends.get(n, s) == s for n, s in zip(ev["run_name"], ev["step"])]]
  keep = done[["run_name", "run_dir", *POINT_KEYS]]
  return ev.drop(columns=[c for c in POINT_KEYS if c in ev.columns]).merge(keep, on="run_name")


def curve_points(runs: pd.DataFrame, curves: pd.DataFrame,
                 param_col: str = "params_non_embedding") -> pd.DataFrame:
  """One row per (clean grid point, evaluation step), seeds averaged where they share the step.

  Stopping a run at an evaluation is a way to spend that evaluation's compute, so a family's
  loss-vs-compute frontier reads every evaluation, not only the final one (an overfitting run's
  best lies mid-way). `epochs` stays the point's planned count; `epoch` is how far it had got."""
  ev = _clean_eval_rows(runs, curves)
  rows = []
  if ev.empty:
    return pd.DataFrame(columns=[*CURVE_KEYS, "N", "D", "C", "C_6ND", "loss", "se", "epoch",
                                 "n_seeds", "runs"])
  for key, g in ev.groupby(CURVE_KEYS, dropna=False, sort=True):
    loss = g["loss"].to_numpy(dtype=np.float64)
    n = float(np.nanmedian(g[param_col])) if g[param_col].notna().any() else float("nan")
    d = float(g["tokens_seen"].mean())
    rows.append(dict(zip(CURVE_KEYS, key), N=n, D=d, C=float(g["flops"].mean()), C_6ND=6.0 * n * d,
                     loss=float(loss.mean()),
                     se=_combine_se(loss, g["loss_se"].to_numpy(dtype=np.float64)),
                     epoch=float(g["epoch"].mean()), n_seeds=int(len(g)),
                     runs=",".join(map(str, g["run_name"]))))
  out = pd.DataFrame(rows)
  out["step"] = out["step"].astype(float)
  return out


def curve_records(runs: pd.DataFrame, cpts: pd.DataFrame) -> dict[tuple, dict]:
  """Per curve_points row (curve_key), the seed-mean per-sequence losses saved at that step (rows
  whose runs saved none are left out: their comparisons fall back to independent SEs)."""
  dirs = dict(zip(runs["run_name"].astype(str), runs["run_dir"]))
  out = {}
  for _, r in cpts.iterrows():
    rec = paired.mean_of([paired.load(dirs[name], r["step"]) for name in str(r["runs"]).split(",")
                          if name in dirs] or [None])
    if rec is not None:
      out[curve_key(r)] = rec
  return out


def single_epoch_curves(runs: pd.DataFrame, curves: pd.DataFrame,
                        param_col: str = "params_non_embedding") -> pd.DataFrame:
  """Eval curves of finished runs with E <= 1, as (objective, run_name, N, flops, loss)."""
  done = runs[runs["finished"] & (runs["epochs"] <= 1.0 + 1e-9)]
  ev = curves[(curves["split"] == "eval") & curves["run_name"].isin(set(done["run_name"]))]
  n_of = dict(zip(done["run_name"], done[param_col]))
  return pd.DataFrame(dict(objective=ev["objective"], run_name=ev["run_name"],
                           N=ev["run_name"].map(n_of), flops=ev["flops"], loss=ev["loss"]))
