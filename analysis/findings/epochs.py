"""Where validation loss is lowest along E (epochs), per size and per budget, and runs that overfit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import paired
from analysis.findings.points import point_key

FINAL_BASIS = "final loss of each run"
CURVE_BASIS = "best evaluation along each run's curve"


def _has_run_bests(pts: pd.DataFrame) -> bool:
  """Whether every point carries its runs' best evaluation (loss and epoch): runs with eval
  curves (or a summary that recorded the best) can be read at their best, not only their end."""
  cols = ["best_loss", "best_epoch"]
  return (not pts.empty and set(cols) <= set(pts.columns)
          and bool(np.isfinite(pts[cols].to_numpy(dtype=np.float64)).all()))


def _all_annealed(g: pd.DataFrame) -> bool:
  """WSD branch ends only: each point is its run's end by construction, so the family's best E
  and its rise are read across the branches (by their final losses), not within one run."""
  return "annealed" in g.columns and bool(g["annealed"].astype(bool).all())


def rise_verdict(rise: float, se: float) -> str:
  """How the loss at the end stands against the best: 'best at the end' (no rise), 'significant'
  (> 2 SE, the threshold the report's prose uses) or 'inconclusive'."""
  if not rise > 0:
    return "best at the end"
  return "significant" if se > 0 and rise > 2 * se else "inconclusive"


def _size_by_final(g: pd.DataFrame, records: dict) -> dict:
  """One size's runs compared by their final losses: the best E and the rise to the largest E."""
  i = int(np.argmin(g["loss"].to_numpy()))
  best, last = g.iloc[i], g.iloc[-1]
  rise = float(last["loss"] - best["loss"])
  se, kind = paired.diff_se(records.get(point_key(last)), records.get(point_key(best)),
                            last["se"], best["se"])
  return dict(basis=FINAL_BASIS, best_epochs=float(best["epochs"]), best_epoch=float(best["epochs"]),
              best_loss=float(best["loss"]), best_se=float(best["se"]),
              last_epochs=float(last["epochs"]), last_loss=float(last["loss"]),
              last_se=float(last["se"]), rise_after=rise, rise_after_se=se,
              rise_after_se_kind=kind)


def _size_by_curve(g: pd.DataFrame, records: dict) -> dict:
  """One size's runs read at their best evaluation (seed means, as answer.bests): the run that
  reached the lowest, the epoch it got there, and its rise from there to its own end (paired
  over the same sequences where the run saved both evaluations)."""
  r = g.iloc[int(np.argmin(g["best_loss"].to_numpy()))]
  rise = float(r["loss"] - r["best_loss"])
  key = point_key(r)
  se, kind = paired.diff_se(records.get(key), getattr(records, "best", {}).get(key), r["se"],
                            r["best_se"])
  return dict(basis=CURVE_BASIS, best_epochs=float(r["epochs"]), best_epoch=float(r["best_epoch"]),
              best_loss=float(r["best_loss"]), best_se=float(r["best_se"]),
              last_epochs=float(r["epochs"]), last_loss=float(r["loss"]), last_se=float(r["se"]),
              rise_after=max(rise, 0.0), rise_after_se=se if rise > 0 else 0.0,
              rise_after_se_kind=kind)


def epoch_findings(pts: pd.DataFrame, records: dict[tuple, dict] | None = None) -> dict:
  """Per (family, U, size) and per (family, U) (the best size): where validation loss is lowest.

  With each run's best evaluation known (_has_run_bests), runs are read at that best: a long run
  that overfitted after a mid-run best counts by its best, and the rise is from there to the end
  of the same run. Otherwise runs are compared by their final losses and the rise is to the
  largest E tried; so are WSD branch ends (_all_annealed). best_epochs / last_epochs: the planned
  E of the runs; best_epoch: the epoch of the best evaluation. SEs paired over sequences where the runs saved them (PointRecords)."""
  records = records or {}
  by_curve = _has_run_bests(pts)
  series = []
  for (obj, u, size), g in pts.groupby(["objective", "unique_tokens", "model_size"]):
    g = g.sort_values("epochs")
    found = (_size_by_curve(g, records) if by_curve and not _all_annealed(g)
             else _size_by_final(g, records))
    rise, se = found["rise_after"], found["rise_after_se"]
    series.append(dict(objective=obj, unique_tokens=float(u), model_size=size,
                       N=float(g["N"].iloc[0]), epochs_tried=g["epochs"].tolist(), **found,
                       rise_z=rise / se if se > 0 else None, verdict=rise_verdict(rise, se)))
  per_budget = []
  for (obj, u), _ in pts.groupby(["objective", "unique_tokens"]):
    sizes = [x for x in series if x["objective"] == obj and x["unique_tokens"] == float(u)]
    b = min(sizes, key=lambda x: x["best_loss"])
    per_budget.append(dict(b, max_epochs=max(max(x["epochs_tried"]) for x in sizes)))
  return dict(per_size=series, per_budget=per_budget)


def within_run_overfitting(runs: pd.DataFrame) -> list[dict]:
  """Runs whose validation loss ended above its best: the epoch of the best and the rise (paired
  over the run's own two evaluations where it saved them)."""
  out = []
  done = runs[runs["finished"] & np.isfinite(runs["best_eval_loss"])]
  for r in done.itertuples():
    rise = float(r.final_eval_loss - r.best_eval_loss)
    if rise > 0:
      se, kind = paired.diff_se(paired.load(r.run_dir, getattr(r, "final_eval_step", None)),
                                paired.load(r.run_dir, r.best_step), r.final_eval_loss_se,
                                r.best_eval_loss_se)
      out.append(dict(run_name=r.run_name, objective=r.objective, unique_tokens=r.unique_tokens,
                      model_size=r.model_size, best_epoch=r.best_epoch, epochs=r.epochs,
                      rise=rise, rise_se=se, rise_se_kind=kind))
  return out
