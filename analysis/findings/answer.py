"""The study's answer per unique budget, each number with its interval: each family's best loss and
where it was reached, the paired gap between the two bests, the learning-rate sweep behind the
recipe, and the multiple-choice task over the best runs' training.

The best loss is the minimum over a family's grid points (each a seed mean of the runs' best
validation losses), so it is biased low by the selection; the gap compares the two selected
points on the same validation sequences, paired and clustered by document where they saved
per-sequence losses at their best evaluations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import paired
from analysis.findings import points as points_lib
from analysis.findings.points import POINT_KEYS
from analysis.runs import collect
from dlmscale import run_dir as rundir

FAMILIES = ("ar", "mdm")
# What a run must record for the task curve: a metric row per evaluation with these keys.
MC_ROW = ("split='mc'", "step", "epoch", "mc_accuracy", "mc_accuracy_se", "mc_nll_gap",
          "mc_nll_gap_se")


def _runs_of(runs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
  sel = np.ones(len(runs), dtype=bool)
  for k in POINT_KEYS:
    sel &= (runs[k] == row[k]).to_numpy()
  return runs[sel & runs["finished"].to_numpy(dtype=bool)]


def best_record(runs: pd.DataFrame) -> dict | None:
  """Per-sequence losses at each run's best evaluation, averaged over the point's seeds."""
  return paired.mean_of([paired.load(r.run_dir, r.best_step) for r in runs.itertuples()])


def _still_improving(b: pd.Series, family: pd.DataFrame, members: pd.DataFrame) -> bool:
  """A run read along its curve: best at its last evaluation. A WSD branch end (one evaluation,
  annealed): no longer branch of the same size was tried, so nothing says it had turned."""
  if b.get("annealed", False):
    same = family[family["model_size"] == b["model_size"]]
    return bool(b["epochs"] >= same["epochs"].max())
  return bool(len(members) and (members["best_step"] >= members["final_eval_step"]).all())


def bests(pts: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
  """Per U: each family's lowest best loss, where (size, epoch, compute), and AR - MDM between
  the two with its SE (> 0: diffusion's best is lower)."""
  out = []
  for u, g in pts.groupby("unique_tokens"):
    entry = dict(unique_tokens=float(u), families={})
    recs = {}
    for obj, gf in g.groupby("objective"):
      b = gf.loc[gf["best_loss"].idxmin()]
      members = _runs_of(runs, b)
      recs[obj] = best_record(members)
      entry["families"][obj] = dict(
          model_size=str(b["model_size"]), N=float(b["N"]), epochs_planned=float(b["epochs"]),
          best_epoch=float(b["best_epoch"]), best_flops=float(b["best_flops"]),
          loss=float(b["best_loss"]), se=float(b["best_se"]), n_points=int(len(gf)),
          annealed=bool(b.get("annealed", False)), still_improving=_still_improving(b, gf, members),
          runs=[str(r) for r in members["run_name"]])
    fams = entry["families"]
    if set(FAMILIES) <= set(fams):
      gap = fams["ar"]["loss"] - fams["mdm"]["loss"]
      se, kind = paired.diff_se(recs["ar"], recs["mdm"], fams["ar"]["se"], fams["mdm"]["se"])
      entry["gap"] = dict(ar_minus_mdm=gap, se=se, se_kind=kind,
                          ci=[gap - 1.96 * se, gap + 1.96 * se] if se > 0 else None,
                          verdict=paired.verdict(gap, se))
    out.append(entry)
  return out


FLOOR_SPREAD = 1e-6  # nats: runs whose floors differ by more were scored on different validation sets


def unigram_floor(runs: pd.DataFrame) -> dict:
  """The entropy of the validation tokens' unigram distribution (nats/token), as each run recorded
  it (summary val_unigram_entropy, from the trainer's eval set): what a predictor that ignores
  context scores at best on these tokens. Runs from before the record have none; then `reason`."""
  col = pd.to_numeric(runs.get("val_unigram_entropy", pd.Series(dtype=float)), errors="coerce")
  done = col[runs["finished"].astype(bool) & np.isfinite(col)] if len(col) else col
  if done.empty:
    return dict(value=None, reason=f"the runs predate the trainer's record of it "
                                   f"(val_unigram_entropy in {rundir.SUMMARY})")
  spread = float(done.max() - done.min())
  return dict(value=float(done.median()), n_runs=int(done.size), spread=spread,
              note=None if spread <= FLOOR_SPREAD else
              f"runs recorded floors {float(done.min()):.3f}-{float(done.max()):.3f} (different "
              "validation sets); the median is drawn")


def stars(fits: dict) -> dict:
  """R_D* and R_N* per family from the data-constrained fit, or why they are not identified."""
  out = {}
  for fam, d in fits.get("datacons", {}).items():
    if d.get("status") != "ok":
      out[fam] = dict(R_D_star=None, R_N_star=None, reason=f"{d.get('status')}: {d.get('reason')}")
      continue
    ci = (d.get("bootstrap") or {}).get("ci", {})
    rn_ok = d.get("R_N_star_identifiable", False)
    out[fam] = dict(R_D_star=d["params"]["R_D_star"], R_D_star_ci=ci.get("R_D_star"),
                    R_N_star=d["params"]["R_N_star"] if rn_ok else None,
                    R_N_star_ci=ci.get("R_N_star") if rn_ok else None,
                    R_N_star_reason=None if rn_ok else d.get("R_N_star_note", "not identifiable"))
  return out


def tuning_points(runs: pd.DataFrame) -> pd.DataFrame:
  """Finished runs scored on the tuning set, a WSD trunk left out and each branch read at its end
  (points.annealed), with a weight_decay column (NaN for runs from before it was recorded)."""
  tune = runs[(runs["eval_set"].astype(str) == collect.TUNING_SET) & runs["finished"]
              & np.isfinite(pd.to_numeric(runs["lr"], errors="coerce"))]
  tune = points_lib.annealed(tune)
  wd = tune["weight_decay"] if "weight_decay" in tune.columns else np.nan
  return tune.assign(weight_decay=pd.to_numeric(wd, errors="coerce"))


def lr_sweep(runs: pd.DataFrame) -> list[dict]:
  """Per (family, size, U, E): loss on the TUNING set against the peak learning rate, and the rate that
  minimises it (per weight decay, where runs differ in it). Only runs with config eval.set == collect.TUNING_SET enter; the validation set
  the claims use never decides the recipe. The chosen rate is compared with the runner-up
  (paired over the tuning sequences where both saved them) and flagged when it is the largest or
  smallest rate tried."""
  runs = runs.assign(lr=pd.to_numeric(runs["lr"], errors="coerce"))
  tune = tuning_points(runs)
  claims = runs[(runs["eval_set"].astype(str) != collect.TUNING_SET) & runs["finished"]]
  out = []
  for (obj, size, u, e, wd), g in tune.groupby(["objective", "model_size", "unique_tokens", "epochs",
                                                "weight_decay"], sort=True, dropna=False):
    pts = []
    for lr, gl in g.groupby("lr"):
      loss = gl["best_eval_loss"].to_numpy(dtype=np.float64)
      se = gl["best_eval_loss_se"].to_numpy(dtype=np.float64)
      spread = float(np.var(loss, ddof=1)) / loss.size if loss.size > 1 else 0.0
      pts.append(dict(lr=float(lr), loss=float(loss.mean()),
                      se=float(np.sqrt(np.nanmean(se ** 2) + spread)), n_seeds=int(loss.size),
                      rec=best_record(gl)))
    pts.sort(key=lambda p: p["lr"])
    i = int(np.argmin([p["loss"] for p in pts]))
    entry = dict(objective=obj, model_size=str(size), unique_tokens=float(u), epochs=float(e),
                 weight_decay=None if pd.isna(wd) else float(wd), chosen_lr=pts[i]["lr"],
                 chosen_loss=pts[i]["loss"], chosen_se=pts[i]["se"],
                 at_edge=bool(len(pts) > 1 and i in (0, len(pts) - 1)),
                 points=[{k: v for k, v in p.items() if k != "rec"} for p in pts],
                 used_by_claims=sorted({float(v) for v in claims.loc[
                     (claims["objective"] == obj) & (claims["model_size"] == size), "lr"].dropna()}))
    if len(pts) > 1:
      j = min((k for k in range(len(pts)) if k != i), key=lambda k: pts[k]["loss"])
      d = pts[j]["loss"] - pts[i]["loss"]
      se, kind = paired.diff_se(pts[j]["rec"], pts[i]["rec"], pts[j]["se"], pts[i]["se"])
      entry["runner_up"] = dict(lr=pts[j]["lr"], loss_above=d, se=se, se_kind=kind,
                                verdict=paired.verdict(d, se))
    out.append(entry)
  return out


def _mc_curve(curves: pd.DataFrame, name: str) -> pd.DataFrame:
  mc = curves[(curves["run_name"] == name) & (curves["split"] == "mc")]
  return mc.dropna(subset=["mc_accuracy"]).sort_values("step")


REPLICA_TOLERANCE = 1e-4  # nats: float rounding between processes, not a different run


def _replica_source(name: str, runs: pd.DataFrame, replicas) -> str | None:
  """The re-run of `name` with eval.task_every > 0, if it trained the same run: the same final
  validation loss (the task is scored beside training, not inside it), else None."""
  mine = runs.loc[runs["run_name"] == name, "final_eval_loss"]
  theirs = replicas.runs.loc[replicas.runs["run_name"] == name, "final_eval_loss"]
  if mine.empty or theirs.empty or not np.isfinite(mine.iloc[0]) or not np.isfinite(theirs.iloc[0]):
    return None
  d = abs(float(theirs.iloc[0]) - float(mine.iloc[0]))
  if d > REPLICA_TOLERANCE:
    return None
  return (f"a re-run of the same point with eval.task_every > 0 (final validation loss "
          f"{'identical to' if d == 0 else f'within {d:.1e} nats of'} the study's run's)")


def task_point_after(points: list[dict], best_epoch: float) -> dict:
  """The first task point at or after the validation optimum (else the last): the change from it to
  the run's end is what happened while validation loss rose, not the improvement before the best."""
  after = [p for p in points if p["epoch"] >= best_epoch - 1e-9]
  return after[0] if after else points[-1]


def task_changes(points: list[dict], best_epoch: float, run_dir=None) -> dict:
  """From the first task point after the validation optimum to the last: the change in accuracy and
  NLL gap, paired per item when both evaluations saved their per-item scores, else with the two
  SEs combined as if independent."""
  at, last = task_point_after(points, best_epoch), points[-1]
  items = [paired.load_items(run_dir, p["step"]) if run_dir is not None else None for p in (last, at)]
  out = {}
  for key, item_key in (("accuracy", "credit"), ("nll_gap", "nll_gap")):
    d = last[key] - at[key]
    pair = paired.item_difference(*items, item_key)
    if pair is not None and np.isfinite(pair["se"]):
      se, kind, extra = pair["se"], paired.PAIRED_ITEMS, dict(n_items=pair["n_items"],
                                                              n_items_changed=pair["n_changed"])
    else:
      se = float(np.hypot(np.nan_to_num(last[f"{key}_se"]), np.nan_to_num(at[f"{key}_se"])))
      kind, extra = "independent SEs combined (no per-item scores saved, so no pairing)", {}
    out[f"{key}_change_after_best"] = dict(value=d, se=se, from_epoch=at["epoch"],
                                           to_epoch=last["epoch"], verdict=paired.verdict(d, se),
                                           se_kind=kind, **extra)
  return out


def task_over_training(best: list[dict], runs: pd.DataFrame, curves: pd.DataFrame,
                       replicas=None) -> dict:
  """For each family's best run per U: task accuracy and the NLL gap (mean over items of the
  other choices' NLL minus the true choice's, paired within each item) at every evaluation the
  run recorded (metrics rows with split "mc"), else at those of a re-run of the same point that
  recorded them (`replicas`, collected from another grid directory: the study need not be re-run
  to add the task), else the final checkpoint's eval.json."""
  by_name = runs.set_index("run_name")
  rows, missing, mismatched = [], [], []
  for b in best:
    for obj, f in b["families"].items():
      name = f["runs"][0] if f["runs"] else None
      if name is None:
        continue
      mc, source = _mc_curve(curves, name), f"{rundir.METRICS} (split mc)"
      if not len(mc) and replicas is not None and len(_mc_curve(replicas.curves, name)):
        source = _replica_source(name, runs, replicas)
        mc = _mc_curve(replicas.curves, name) if source else mc
        if source is None:
          mismatched.append(name)
      if len(mc):
        points = [dict(step=float(r.step), epoch=float(r.epoch), accuracy=float(r.mc_accuracy),
                       accuracy_se=float(r.mc_accuracy_se), nll_gap=float(r.mc_nll_gap),
                       nll_gap_se=float(r.mc_nll_gap_se)) for r in mc.itertuples()]
      elif np.isfinite(by_name.loc[name, "mc_accuracy"]):
        r = by_name.loc[name]
        points = [dict(step=float(r["last_step"]), epoch=float(r["epochs"]),
                       accuracy=float(r["mc_accuracy"]), accuracy_se=float(r["mc_accuracy_se"]),
                       nll_gap=float(r["mc_nll_gap"]), nll_gap_se=float(r["mc_nll_gap_se"]))]
        source = "eval.json (final checkpoint only)"
      else:
        missing.append(name)
        continue
      entry = dict(unique_tokens=b["unique_tokens"], objective=obj, run_name=name,
                   best_val_epoch=f["best_epoch"], source=source, points=points)
      if len(points) >= 2:  # after the validation optimum: does the task keep improving?
        own = source.startswith(rundir.METRICS) and "run_dir" in by_name.columns
        entry.update(task_changes(points, f["best_epoch"], by_name.loc[name, "run_dir"] if own else None))
      rows.append(entry)
  need = (f"each evaluation should append a {rundir.METRICS} row {{" + ", ".join(MC_ROW) + "} "
          "(mc_nll_gap: mean over items of the mean NLL of the other choices minus the NLL of "
          "the true one)")
  curve_ok = any(len(r["points"]) >= 2 for r in rows)
  return dict(runs=rows, without_task=missing, replica_not_the_same_run=mismatched,
              trainer_must_record=None if curve_ok else need)
