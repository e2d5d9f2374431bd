"""The weight-decay check on the tuning set: at one learning rate, does another weight decay than the
study's change the tuning loss beyond errors? (The learning-rate sweep is answer.lr_sweep.)"""

from __future__ import annotations

import pandas as pd

from analysis.findings import paired
from analysis.findings.answer import best_record, tuning_points

BASE_WEIGHT_DECAY = 0.1  # configs/base.py: the study's


def weight_decay_check(runs: pd.DataFrame) -> list[dict]:
  """Per (family, size, U, E, lr) with the base weight decay and another: other - base tuning loss,
  paired over the tuning sequences (> 0: the base decay is better)."""
  tune = tuning_points(runs.assign(lr=pd.to_numeric(runs["lr"], errors="coerce")))
  out = []
  for (obj, size, u, e, lr), g in tune.groupby(["objective", "model_size", "unique_tokens", "epochs", "lr"],
                                               sort=True):
    base = g[g["weight_decay"] == BASE_WEIGHT_DECAY]
    if base.empty:
      continue
    rec_base = best_record(base)
    for wd, other in g[g["weight_decay"] != BASE_WEIGHT_DECAY].dropna(subset=["weight_decay"]).groupby("weight_decay"):
      d = float(other["best_eval_loss"].mean() - base["best_eval_loss"].mean())
      se, kind = paired.diff_se(best_record(other), rec_base, float(other["best_eval_loss_se"].mean()),
                                float(base["best_eval_loss_se"].mean()))
      out.append(dict(objective=obj, model_size=str(size), unique_tokens=float(u), epochs=float(e),
                      lr=float(lr), base=BASE_WEIGHT_DECAY, other=float(wd),
                      base_loss=float(base["best_eval_loss"].mean()), other_minus_base=d, se=se,
                      se_kind=kind, verdict=paired.verdict(d, se)))
  return out
