"""The epochs table: runs read at their best evaluation when they carry curves, else by their end."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import epochs
from analysis.render import epochs as epochs_md

NAN = float("nan")


def _pts(with_bests: bool = True) -> pd.DataFrame:
  """The CPU study's shape: per size an E = 1 run and one long run that overfits after mid-run.
  By final loss s2's long run looks best at E = 32; by best evaluation s1's is, at epoch 12.5."""
  rows = [("s1", 1.0, 6.0, 6.0, 1.0), ("s1", 32.0, 5.6, 5.0, 12.5),
          ("s2", 1.0, 5.9, 5.9, 1.0), ("s2", 32.0, 5.3, 5.2, 16.0)]
  return pd.DataFrame([dict(objective="ar", unique_tokens=1e6, model_size=s, epochs=e, N=1e5,
                            label_noise=0.0, num_orders=1, loss=loss, se=0.1,
                            best_loss=best if with_bests else NAN, best_se=0.1,
                            best_epoch=at if with_bests else NAN)
                       for s, e, loss, best, at in rows])


def test_runs_with_curves_are_read_at_their_best_evaluation():
  (b,) = epochs.epoch_findings(_pts())["per_budget"]
  assert (b["basis"], b["model_size"], b["best_epochs"], b["best_epoch"]) == (
      epochs.CURVE_BASIS, "s1", 32.0, 12.5)
  assert b["best_loss"] == 5.0 and b["last_loss"] == 5.6
  assert np.isclose(b["rise_after"], 0.6) and np.isclose(b["rise_after_se"], np.hypot(0.1, 0.1))
  assert b["verdict"] == "significant"


def test_without_curves_runs_are_compared_by_their_final_losses():
  (b,) = epochs.epoch_findings(_pts(with_bests=False))["per_budget"]
  assert (b["basis"], b["model_size"], b["best_epochs"], b["rise_after"]) == (
      epochs.FINAL_BASIS, "s2", 32.0, 0.0)
  text = "\n".join(epochs_md.epochs_section(dict(per_budget=[b]), []))
  assert "| 1M | AR | s2 | 32 | 5.300 ± 0.100 | E=32 | 0.000 ± 0.141 |" in text
  assert "final loss is lowest at the largest epoch count tried" in text


def test_epoch_prose_follows_the_within_run_best_and_its_interval():
  ep = epochs.epoch_findings(_pts())
  text = "\n".join(epochs_md.epochs_section(ep, []))
  assert ("| 1M | AR | s1 | 12.5 of 32 | 5.000 ± 0.100 | 5.600 ± 0.100 | 0.600 ± 0.141 | "
          "significant rise (> 2 SE) |") in text
  assert "AR is best at epoch 12.5 of its E = 32 run (s1, loss 5.000 ± 0.100)" in text
  assert "largest epoch count" not in text and "final loss" not in text
  small = dict(ep["per_budget"][0], rise_after=0.15, rise_after_se=0.1, verdict="inconclusive")
  text = "\n".join(epochs_md.epochs_section(dict(per_budget=[small]), []))
  assert "(within 2 SE, inconclusive)" in text and "significant" not in text
  end = dict(ep["per_budget"][0], best_epoch=8.0, last_epochs=8.0, rise_after=0.0,
             rise_after_se=0.0, verdict="best at the end", max_epochs=32.0)
  text = "\n".join(epochs_md.epochs_section(dict(per_budget=[end]), []))
  assert "lowest evaluation is the last of its E = 8 run" in text
  assert "longer runs (up to E = 32) reached no lower" in text and "still improving" not in text
