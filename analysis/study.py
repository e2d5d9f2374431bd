"""From the runs table to findings: grid points, epochs, overfitting, what the evaluations rest on.

Everything here is plain data (JSON-able dicts) so `fits.json`, the plots and `report.md` read the
same numbers. Seeds of one grid point are averaged; their spread enters the standard error.
The law fits per family live in study_fits.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import collect, paired

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


def points(runs: pd.DataFrame, param_col: str = "params_non_embedding") -> pd.DataFrame:
  """One row per grid point (POINT_KEYS) of finished runs, seeds averaged."""
  done = runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]
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
        n_seeds=int(len(g)),
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
  done = runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]
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
  """Eval rows of finished clean runs, with the run's grid-point columns and run_dir joined on."""
  done = clean(claim_runs(runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]))
  if done.empty or curves.empty:
    return pd.DataFrame()
  ev = curves[(curves["split"] == "eval") & curves["run_name"].isin(set(done["run_name"]))]
  ev = ev.dropna(subset=["loss", "step", "flops", "tokens_seen"])
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


FINAL_BASIS = "final loss of each run"
CURVE_BASIS = "best evaluation along each run's curve"


def _has_run_bests(pts: pd.DataFrame) -> bool:
  """Whether every point carries its runs' best evaluation (loss and epoch): runs with eval
  curves (or a summary that recorded the best) can be read at their best, not only their end."""
  cols = ["best_loss", "best_epoch"]
  return (not pts.empty and set(cols) <= set(pts.columns)
          and bool(np.isfinite(pts[cols].to_numpy(dtype=np.float64)).all()))


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
  largest E tried. best_epochs / last_epochs: the planned E of the runs; best_epoch: the epoch
  of the best evaluation. SEs paired over sequences where the runs saved them (PointRecords)."""
  records = records or {}
  by_curve = _has_run_bests(pts)
  series = []
  for (obj, u, size), g in pts.groupby(["objective", "unique_tokens", "model_size"]):
    g = g.sort_values("epochs")
    found = _size_by_curve(g, records) if by_curve else _size_by_final(g, records)
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


def single_epoch_curves(runs: pd.DataFrame, curves: pd.DataFrame,
                        param_col: str = "params_non_embedding") -> pd.DataFrame:
  """Eval curves of finished runs with E <= 1, as (objective, run_name, N, flops, loss)."""
  done = runs[runs["finished"] & (runs["epochs"] <= 1.0 + 1e-9)]
  ev = curves[(curves["split"] == "eval") & curves["run_name"].isin(set(done["run_name"]))]
  n_of = dict(zip(done["run_name"], done[param_col]))
  return pd.DataFrame(dict(objective=ev["objective"], run_name=ev["run_name"],
                           N=ev["run_name"].map(n_of), flops=ev["flops"], loss=ev["loss"]))


def evaluation_summary(runs: pd.DataFrame, records: dict[tuple, dict]) -> dict:
  """What the validation numbers rest on: sequences, documents, and how errors were computed."""
  done = runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]
  docs = pd.to_numeric(done.get("eval_documents"), errors="coerce") if "eval_documents" in done else None
  seqs = pd.to_numeric(done.get("n_sequences"), errors="coerce") if "n_sequences" in done else None
  known = None if docs is None or docs.isna().all() else sorted({int(v) for v in docs.dropna()})
  return dict(eval_documents=known,
              n_sequences=None if seqs is None or seqs.isna().all() else sorted({int(v) for v in seqs.dropna()}),
              points_with_per_sequence_losses=len(records),
              se=("clustered by document; comparisons paired per sequence" if known else
                  "as recorded by the runs (from before the eval set was spread over documents: "
                  "sequences treated as independent, which understates the error)"))


def grid_summary(runs: pd.DataFrame, manifest: dict | None, problems: list[str]) -> dict:
  done = runs["finished"] & np.isfinite(runs["final_eval_loss"])
  partial = runs.loc[~done, ["run_name", "last_step", "steps"]]
  return dict(n_runs=int(len(runs)), n_finished=int(done.sum()),
              partial=[dict(run_name=r.run_name,
                            last_step=None if not np.isfinite(r.last_step) else float(r.last_step))
                       for r in partial.itertuples()],
              families=sorted(map(str, runs.loc[done, "objective"].dropna().unique())),
              budgets=sorted(float(u) for u in runs.loc[done, "unique_tokens"].dropna().unique()),
              sizes=[str(s) for s in runs.loc[done].groupby("model_size")["params_total"]
                     .median().sort_values().index],
              epochs=sorted(float(e) for e in runs.loc[done, "epochs"].dropna().unique()),
              manifest=manifest, problems=problems)
