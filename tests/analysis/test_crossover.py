"""Critical compute and double-descent detection on synthetic curves with known answers."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from analysis.findings import doubledescent
from analysis.laws import crossover

from analysis.reference import DIR as REF


def _curves(c, e_ar=2.0, k_ar=10.0, e_mdm=1.7, k_mdm=20.0, p=0.1):
  # AR learns faster (smaller coefficient), MDM has the lower floor: they cross once.
  return e_ar + k_ar * c ** -p, e_mdm + k_mdm * c ** -p


def test_critical_compute_recovers_a_known_crossing():
  c = np.logspace(12, 22, 80)
  ar, mdm = _curves(c)
  # e_ar + k_ar x = e_mdm + k_mdm x with x = C^-p  ->  x = 0.3 / 10, C = x^(-1/p)
  c_true = (0.3 / 10.0) ** (-1 / 0.1)
  res = crossover.critical_compute(crossover.frontier(c, ar), crossover.frontier(c, mdm))
  assert res.status == "crosses"
  assert res.c_crit == pytest.approx(c_true, rel=0.03)
  assert res.gap_at_max > 0


def test_frontier_is_the_running_best_and_ignores_worse_larger_runs():
  c = np.array([1e12, 1e13, 1e14, 1e15])
  loss = np.array([3.0, 2.5, 2.7, 2.6])  # the 1e14 and 1e15 runs do not improve
  fr = crossover.frontier(c, loss)
  np.testing.assert_allclose(np.exp(fr.log_c), [1e12, 1e13, 1e15])
  np.testing.assert_allclose(fr.loss, [3.0, 2.5, 2.5])
  assert fr.at(np.log(1e14)) == pytest.approx(2.5)
  assert np.isnan(fr.at(np.log(1e16)))


def test_crossing_statuses_when_there_is_no_crossing_inside_the_range():
  c = np.logspace(12, 14, 20)  # well below the crossing at 1.7e15
  ar, mdm = _curves(c)
  fa, fm = crossover.frontier(c, ar), crossover.frontier(c, mdm)
  assert crossover.critical_compute(fa, fm).status == "mdm_never_below"
  assert crossover.critical_compute(fm, fa).status == "mdm_below_throughout"
  far = crossover.frontier(np.logspace(16, 18, 5), np.linspace(2, 1, 5))
  assert crossover.critical_compute(fa, far).status == "no_overlap"


def test_c_crit_power_law_across_budgets():
  u = np.array([25e6, 50e6, 100e6])
  c = 2.12e15 * (u / 1e6) ** 2.174
  law = crossover.fit_c_crit(u, c)
  assert law.exponent == pytest.approx(2.174, abs=1e-9)
  assert law(1e6) == pytest.approx(2.12e15, rel=1e-9)
  assert law(50e6) == pytest.approx(1.05e19, rel=0.01)  # the paper's quoted value


def test_double_descent_found_where_the_curve_rises_and_falls_beyond_its_errors():
  x = np.array([1, 2, 4, 8, 16, 32, 64, 128])
  loss = np.array([4.0, 3.6, 3.3, 3.2, 3.35, 3.15, 3.05, 3.0])
  peaks = doubledescent.detect(x, loss, np.full(8, 0.02))
  assert len(peaks) == 1
  p = peaks[0]
  assert (p.x, p.x_before, p.x_after) == (16, 8, 128)
  assert p.rise == pytest.approx(0.15) and p.fall == pytest.approx(0.35)
  # the same bump inside 2 combined SEs is not significant
  assert doubledescent.detect(x, loss, np.full(8, 0.06)) == []


def test_plain_overfitting_and_plain_improvement_are_not_double_descent():
  x = np.arange(1, 9)
  assert doubledescent.detect(x, [4, 3.5, 3.2, 3.1, 3.15, 3.3, 3.5, 3.8], np.full(8, 0.01)) == []
  assert doubledescent.detect(x, 4.0 / x, np.full(8, 0.01)) == []


def test_datablations_epoch_wise_bump_near_200_epochs():
  df = pd.read_csv(REF / "datablations_epochwise_U100M.csv")
  g = df[df["N_params"] == 14.1e6]
  peaks = doubledescent.detect(g["epochs"], g["val_loss"], min_change=0.02)
  assert peaks and peaks[0].x == 200
  assert peaks[0].x_before == 140 and peaks[0].loss == pytest.approx(4.51041)


def test_an_early_mdm_lead_that_ar_takes_back_is_not_a_crossing():
  """Regression: a noise-level MDM lead at the smallest compute once read as 'below throughout'."""
  from analysis.laws import crossover
  c = np.array([1e10, 1e11, 1e12, 1e13])
  ar = crossover.frontier(c, np.array([6.60, 5.30, 5.20, 5.25]))
  mdm_never = crossover.frontier(c, np.array([6.58, 5.70, 5.60, 5.55]))
  assert crossover.critical_compute(ar, mdm_never).status == "mdm_never_below"
  mdm_late = crossover.frontier(c, np.array([6.58, 5.70, 5.10, 5.00]))
  out = crossover.critical_compute(ar, mdm_late)
  assert out.status == "crosses" and 1e11 < out.c_crit < 1e12
