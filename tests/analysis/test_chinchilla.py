"""Chinchilla approaches 1-3 against the published reference data and synthetic ground truth."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from analysis.laws import approaches, chinchilla, multistart
from dlmscale.errors import UserError

from analysis.reference import DIR as REF


@pytest.fixture(scope="module")
def besiroglu():
  df = pd.read_csv(REF / "chinchilla_besiroglu.csv").sort_values("loss").iloc[:-5]
  n, d, l = df["N_params"].to_numpy(), df["D_tokens"].to_numpy(), df["loss"].to_numpy()
  return n, d, l, chinchilla.fit(n, d, l)


def test_besiroglu_grid_fit_reproduces_published_optimum(besiroglu):
  *_, fit = besiroglu
  assert fit.n_starts == 4500 and fit.n_points == 240
  assert abs(fit.objective - 1.01827e-3) < 1e-7
  assert abs(fit.params["alpha"] - 0.3473) < 1e-3
  assert abs(fit.params["beta"] - 0.3672) < 1e-3
  assert abs(fit.params["E"] - 1.8172) < 1e-3
  assert abs(fit.params["b"] - np.log(2143.9)) < 0.05


def test_bootstrap_standard_errors_match_besiroglu(besiroglu):
  n, d, l, fit = besiroglu
  boot = chinchilla.bootstrap(n, d, l, fit, n_boot=200, seed=0)
  assert boot.n_boot == 200
  for name, published in (("alpha", 0.015), ("beta", 0.021)):
    assert published / 1.5 < boot.se[name] < published * 1.5, (name, boot.se[name])
    lo, hi = boot.ci[name]
    assert lo < fit.params[name] < hi


def test_closed_form_allocations_match_reference():
  ref = json.loads((REF / "chinchilla_reference_allocations.json").read_text())
  for name, entry in ref.items():
    p = entry["params"]
    params = dict(p, a=np.log(p["A"]), b=np.log(p["B"]), e=np.log(p["E"]))
    for c_key, want in entry["allocation"].items():
      got = chinchilla.allocation(params, float(c_key))
      assert got["G"] == pytest.approx(entry["G"], rel=1e-6)
      assert got["a_N_exponent"] == pytest.approx(entry["a_N_exponent"], rel=1e-6)
      for key in ("N_opt", "D_opt", "D_over_N", "L_opt"):
        assert float(got[key]) == pytest.approx(want[key], rel=1e-6), (name, c_key, key)
    # d_to_n_opt inverts the allocation: D_opt(C) tokens are compute-optimal for N_opt(C).
    alloc = chinchilla.allocation(params, 1e21)
    assert chinchilla.d_to_n_opt(params, alloc["D_opt"]) == pytest.approx(alloc["N_opt"],
                                                                               rel=1e-9)


def test_objective_gradient_matches_finite_differences():
  rng = np.random.default_rng(1)
  n, d = np.exp(rng.uniform(15, 22, 30)), np.exp(rng.uniform(18, 25, 30))
  l = rng.uniform(2, 4, 30)
  w = rng.integers(0, 3, size=(2, 30)).astype(float)
  fun = chinchilla.objective(np.log(n), np.log(d), np.log(l), weights_RxN=w)
  x = np.array([[6.0, 7.0, 0.5, 0.3, 0.35], [5.0, 8.0, 0.7, 0.4, 0.3]])
  f, g = fun(x, np.arange(2))
  h = 1e-6
  for k in range(5):
    e = np.zeros(5)
    e[k] = h
    num = (fun(x + e, np.arange(2))[0] - fun(x - e, np.arange(2))[0]) / (2 * h)
    np.testing.assert_allclose(g[:, k], num, rtol=1e-5, atol=1e-9)
  # the batch row picks its own weights: row 1 alone equals row 1 of the batch
  assert fun(x[1:], np.array([1]))[0][0] == pytest.approx(f[1])


def test_synthetic_constants_are_recovered_within_their_intervals():
  true = dict(a=np.log(400.0), b=np.log(1500.0), e=np.log(1.8), alpha=0.34, beta=0.28)
  rng = np.random.default_rng(0)
  n = np.repeat(np.logspace(7, 10, 8), 8)
  d = np.tile(np.logspace(9, 12, 8), 8)
  loss = chinchilla.predict(true, n, d) * np.exp(rng.normal(0, 0.005, n.size))
  starts = multistart.grid_starts([[0, 5, 10], [0, 5, 10], [-1, 0, 1], [0, 0.5], [0, 0.5]])
  fit = chinchilla.fit(n, d, loss, starts=starts)
  boot = chinchilla.bootstrap(n, d, loss, fit, n_boot=150, seed=0)
  for k in chinchilla.PARAMS:
    lo, hi = boot.ci[k]
    assert lo <= true[k] <= hi, (k, true[k], lo, hi)
    assert hi - lo < 0.5  # informative, not vacuous
  exp_true = true["beta"] / (true["alpha"] + true["beta"])
  lo, hi = boot.ci["allocation_exponent"]
  assert lo <= exp_true <= hi


def test_batched_lbfgs_keeps_the_best_of_several_basins():
  # f(x) = (x^2 - 1)^2 + 0.3 x: roots of 4x^3 - 4x + 0.3 give the local minimum at 0.960150
  # and the global one at -1.035579.
  def fun(x, rows):
    v = x[:, 0]
    return (v ** 2 - 1) ** 2 + 0.3 * v, (4 * v * (v ** 2 - 1) + 0.3)[:, None]

  starts = np.array([[2.0], [0.5], [-0.2], [-2.5]])
  batch = multistart.batched_lbfgs(fun, starts)
  assert np.all(batch.status_S == 0)
  assert batch.x_SxP[0, 0] == pytest.approx(0.960150, abs=1e-4)
  assert batch.x_SxP[3, 0] == pytest.approx(-1.035579, abs=1e-4)
  res = multistart.multistart_minimize(fun, starts)
  assert res.x[0] == pytest.approx(-1.035579, abs=1e-6)
  assert len(res.minima) == 2 and res.minima[1][1] > res.fun


def _isoflop_points(params, budgets, per_budget=9):
  alloc = chinchilla.allocation(params, np.array(budgets))
  n = np.concatenate([n_opt * np.logspace(-0.8, 0.8, per_budget) for n_opt in alloc["N_opt"]])
  c = np.repeat(budgets, per_budget)
  d = c / (6 * n)
  return n, d, chinchilla.predict(params, n, d)


def test_approach2_isoflop_minima_recover_the_allocation_exponent():
  params = dict(a=np.log(406.4), b=np.log(410.7), e=np.log(1.69), alpha=0.34, beta=0.28)
  n, d, loss = _isoflop_points(params, [1e18, 1e19, 1e20, 1e21])
  res = approaches.approach2(n, d, loss)
  assert len(res["groups"]) == 4
  assert res["N_opt"]["exponent"] == pytest.approx(0.28 / 0.62, abs=0.02)
  assert res["D_opt"]["exponent"] == pytest.approx(0.34 / 0.62, abs=0.02)


def test_approach1_envelope_recovers_the_allocation_exponent():
  params = dict(a=np.log(406.4), b=np.log(410.7), e=np.log(1.69), alpha=0.34, beta=0.28)
  rows = []
  for n in np.logspace(7.5, 10, 14):  # each curve: one size trained on more and more tokens
    c = np.logspace(17, 22, 60)
    rows += [dict(run_name=f"{n:g}", N=n, flops=ci, loss=float(chinchilla.predict(
        params, n, ci / (6 * n)))) for ci in c]
  res = approaches.approach1(pd.DataFrame(rows))
  assert res["N_opt"]["exponent"] == pytest.approx(0.28 / 0.62, abs=0.04)


def test_bad_inputs_raise_user_errors():
  n, d = np.logspace(7, 9, 5), np.logspace(9, 11, 5)
  with pytest.raises(UserError, match="more points than its 5 free parameters"):
    chinchilla.fit(n, d, np.full(5, 3.0))
  with pytest.raises(UserError, match="must be positive"):
    chinchilla.fit(np.logspace(7, 9, 8), np.logspace(9, 11, 8),
                        np.array([3.0, 2.9, 0.0, 2.7, 2.6, 2.5, -1.0, 2.4]))
  with pytest.raises(UserError, match="power-law fit needs at least 2"):
    approaches.fit_power_law([1.0], [2.0])
