"""The sweeps beside the main grid: double descent (Nakkiran et al.) and AR's token-order ablation.

Double descent is looked for along three axes, each per family and label-noise level:
  model-wise   loss vs parameters at one U and E (width-only when every point is a custom shape of
               one depth, configs/doubledescent.py mode=width; else along the size ladder);
  sample-wise  loss vs U at one size and E (mode=sample);
  epoch-wise   loss vs epochs within one run, from its evaluations (mode=curve: constant lr), and
               across separate runs of one size and U.
Every series of >= 3 points gets a verdict: its peak (doubledescent.detect, differences paired per
sequence and clustered by document where runs saved per-sequence losses) or "no peak beyond
errors". The order ablation (configs/orders.py) compares AR trained on N token orders, all
evaluated left to right, with each other and with diffusion at the same size and budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import doubledescent, paired
from analysis.findings.points import point_key

NO_PEAK = "no peak beyond errors"
MIN_POINTS = 3
# axis -> (x column, the columns held fixed along it)
AXES = {
    "model": ("N", ["objective", "unique_tokens", "epochs", "label_noise", "num_orders"]),
    "sample": ("unique_tokens", ["objective", "model_size", "epochs", "label_noise", "num_orders"]),
    "epoch": ("epochs", ["objective", "unique_tokens", "model_size", "label_noise", "num_orders"]),
}


def _series(x, loss, se, pair_se, n_pairable: int, **fixed) -> dict:
  peaks = doubledescent.detect(x, loss, se, pair_se=pair_se)
  return dict(fixed, x=[float(v) for v in x], loss=[float(v) for v in loss],
              se=[float(v) for v in se], peaks=[p.named() for p in peaks],
              verdict=("peak" if peaks else NO_PEAK),
              se_kind=paired.PAIRED if n_pairable == len(x) else paired.INDEPENDENT)


def _width_only(sizes) -> bool:
  """Every point a custom shape (collect names them custom-dWIDTHLDEPTH) of one depth."""
  sizes = [str(s) for s in sizes]
  return all(s.startswith("custom-d") for s in sizes) and len({s.split("L")[-1] for s in sizes}) == 1


def grid_series(pts: pd.DataFrame, records: dict[tuple, dict]) -> list[dict]:
  """A verdict per (axis, fixed values) series of >= MIN_POINTS grid points (seed means)."""
  out = []
  # model-wise series never mix shapes: custom widths of one depth apart from the size ladder
  pts = pts.assign(shape=[s.split("L")[-1] if str(s).startswith("custom-d") else "ladder"
                          for s in pts["model_size"]])
  for axis, (xcol, fixed) in AXES.items():
    fixed = fixed + (["shape"] if axis == "model" else [])
    for key, g in pts.groupby(fixed, sort=True):
      g = g.sort_values(xcol)
      if g[xcol].nunique() < MIN_POINTS:
        continue
      rows = [g.iloc[k] for k in range(len(g))]
      recs = [records.get(point_key(r)) for r in rows]
      pair_se = (lambda i, j, rows=rows, recs=recs: paired.diff_se(
          recs[i], recs[j], rows[i]["se"], rows[j]["se"])[0])
      s = _series(g[xcol], g["loss"], g["se"], pair_se, sum(r is not None for r in recs),
                  axis=axis, **{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(fixed, key)})
      if axis == "model":
        s.pop("shape")
        s["width_only"] = _width_only(g["model_size"])
        s["sizes"] = [str(v) for v in g["model_size"]]
      out.append(s)
  return out


def _curve_runs(runs: pd.DataFrame) -> pd.DataFrame:
  """Runs meant as epoch-wise curves: a constant learning rate after warmup (mode=curve)."""
  done = runs[runs["finished"]]
  return done[(done["lr_schedule"].astype(str) == "constant")
              | done["run_name"].astype(str).str.endswith("-curve")]


def curve_series(runs: pd.DataFrame, curves: pd.DataFrame) -> list[dict]:
  """Epoch-wise within one run: its evaluations, differences paired over its own saved losses."""
  out = []
  for r in _curve_runs(runs).itertuples():
    ev = curves[(curves["run_name"] == r.run_name) & (curves["split"] == "eval")]
    ev = ev.dropna(subset=["loss"]).sort_values("step")
    if len(ev) < MIN_POINTS:
      continue
    recs = [paired.load(r.run_dir, s) for s in ev["step"]]
    se = ev["loss_se"].to_numpy(dtype=np.float64)
    pair_se = (lambda i, j, recs=recs, se=se: paired.diff_se(recs[i], recs[j], se[i], se[j])[0])
    out.append(_series(ev["epoch"], ev["loss"], se, pair_se, sum(x is not None for x in recs),
                       axis="curve", run_name=r.run_name, objective=r.objective,
                       unique_tokens=float(r.unique_tokens), model_size=str(r.model_size),
                       label_noise=float(r.label_noise)))
  return out


def double_descent(pts: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame,
                   records: dict[tuple, dict]) -> dict:
  return dict(series=grid_series(pts, records) + curve_series(runs, curves),
              criterion="a rise above the lowest earlier point and a fall after the peak, each "
                        "> 2 standard errors of the difference (paired per sequence and clustered "
                        "by document where runs saved per-sequence losses)")


# --- the token-order ablation --------------------------------------------------------------------

def _run_curve(curves: pd.DataFrame, name: str) -> pd.DataFrame:
  ev = curves[(curves["run_name"] == name) & (curves["split"] == "eval")]
  return ev.dropna(subset=["loss"]).sort_values("step")


def orders(runs: pd.DataFrame, curves: pd.DataFrame) -> list[dict]:
  """Per (U, size, E) with AR runs at >= 2 order counts N: each run's eval curve, its best and
  final loss, and its final loss minus plain AR's (N = 1) paired over the eval sequences; the
  diffusion run of the same size and budget, if any, as the reference."""
  done = runs[runs["finished"] & (runs["label_noise"] == 0)]
  ar = done[done["objective"] == "ar"]
  out = []
  for (u, size, e), g in ar.groupby(["unique_tokens", "model_size", "epochs"], sort=True):
    if g["num_orders"].nunique() < 2:
      continue
    ref = {}
    base = g[g["num_orders"] == 1]
    if len(base):
      b = base.iloc[0]
      ref = dict(rec=paired.load(b.run_dir, b.final_eval_step), loss=b.final_eval_loss,
                 se=b.final_eval_loss_se)
    lines = []
    mdm = done[(done["objective"] == "mdm") & (done["unique_tokens"] == u)
               & (done["model_size"] == size) & (done["epochs"] == e)]
    for r in list(g.sort_values(["num_orders", "seed"]).itertuples()) + list(mdm.itertuples()):
      ev = _run_curve(curves, r.run_name)
      line = dict(run_name=r.run_name, objective=r.objective, num_orders=int(r.num_orders),
                  seed=r.seed, epoch=ev["epoch"].tolist(), loss=ev["loss"].tolist(),
                  se=ev["loss_se"].tolist(), best_loss=float(r.best_eval_loss),
                  best_se=float(r.best_eval_loss_se), best_epoch=float(r.best_epoch),
                  final_loss=float(r.final_eval_loss), final_se=float(r.final_eval_loss_se))
      if ref and not (r.objective == "ar" and r.num_orders == 1):
        d = float(r.final_eval_loss - ref["loss"])
        se, kind = paired.diff_se(paired.load(r.run_dir, r.final_eval_step), ref["rec"],
                                  r.final_eval_loss_se, ref["se"])
        line.update(vs_plain=d, vs_plain_se=se, vs_plain_se_kind=kind,
                    vs_plain_verdict=paired.verdict(d, se))
      lines.append(line)
    out.append(dict(unique_tokens=float(u), model_size=str(size), epochs=float(e), runs=lines))
  return out
