"""The allocation planner: datablations' optimal_allocation example, the closed form when data is
plentiful, per-family plans from fitted runs, and bad input."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from analysis import plan
from analysis.laws import chinchilla, datacons

C4 = plan.CONSTANTS["muennighoff_c4"]["params"]


def _run(capsys, *argv):
  rc = plan.main(list(argv))
  cap = capsys.readouterr()
  return rc, cap.out, cap.err


def test_muennighoff_c4_reproduces_datablations_allocation(capsys):
  """datablations README: optimal_allocation(1e22, 25e9) -> 237.3B tokens, 9.49 epochs,
  7.02B parameters (their grid search; ours finds the same minimum of the same law)."""
  rc, out, err = _run(capsys, "--constants=muennighoff_c4", "--compute=1e22", "--unique=25e9")
  assert rc == 0
  p = json.loads(out)["families"]["muennighoff_c4"]
  assert p["D_opt"] == pytest.approx(237.336955e9, rel=0.01)
  assert p["epochs"] == pytest.approx(9.49347822, rel=0.01)
  assert p["N_opt"] == pytest.approx(7.022364736e9, rel=0.01)
  assert 6 * p["N_opt"] * p["D_opt"] == pytest.approx(1e22, rel=1e-9)
  assert not p["at_search_edge"]
  # their Figure-1 comparison: the planned model beats both models they trained at this budget
  for n, d in ((6.34e9, 242e9), (8.67e9, 178e9)):
    assert p["loss"] <= float(datacons.predict(C4, n, d, 25e9))
  assert "parameters on 2.37e+11 tokens (9.49 epochs), predicted loss 2.222" in err


def test_plentiful_data_gives_the_chinchilla_closed_form():
  """With U far above D (no repetition, no excess parameters) the law is Chinchilla's, so the
  optimum must be its closed-form allocation."""
  best = plan.optimum(plan._as_theta(C4), 1e21, 1e15)
  closed = chinchilla.allocation(C4, 1e21)
  assert float(best["N_opt"][0]) == pytest.approx(float(closed["N_opt"]), rel=1e-3)
  assert float(best["loss"][0]) == pytest.approx(float(closed["L_opt"]), rel=1e-9)


def test_scarcer_data_means_smaller_models_and_more_epochs():
  fewer = [plan.optimum(plan._as_theta(C4), 1e22, u) for u in (100e9, 25e9, 5e9)]
  n = [float(f["N_opt"][0]) for f in fewer]
  e = [float(f["epochs"][0]) for f in fewer]
  assert n[0] > n[1] > n[2] and e[0] < e[1] < e[2]


def test_replicates_pair_frozen_base_with_star_resamples():
  chin = {k: np.full(5, float(i)) for i, k in enumerate(chinchilla.PARAMS)}
  dcons = {"rd": np.log(np.arange(1.0, 8.0)), "R_D_star": np.arange(1.0, 8.0)}
  r = plan._replicates(chin, dcons, dict(C4))
  assert r["rd"].size == 5 and r["alpha"][0] == 3.0  # truncated to the shorter set
  assert np.all(r["rn"] == C4["rn"])  # not resampled: held at the fit
  assert plan._replicates(chin, None, dict(C4)) is None


def test_extrapolation_names_what_lies_outside_the_fitted_range():
  fitted = dict(N=[1e6, 1e8], D=[1e8, 1e10], U=[1e8, 1e9])
  assert plan.extrapolation(dict(N_opt=5e7, D_opt=2e9), 5e8, fitted) == []
  assert plan.extrapolation(dict(N_opt=5e8, D_opt=2e9), 5e9, fitted) == ["N", "U"]
  p = plan.plan_family("x", C4, 1e22, 25e9, fitted=fitted)
  assert p["extrapolated"] == ["N", "D", "U"]
  assert "extrapolated (N, D, U outside the fitted range)" in plan.sentence(
      1e22, 25e9, {"ar": p}, None, "")


def test_cli_entry_point_prints_json_then_the_sentence():
  import subprocess
  import sys
  res = subprocess.run([sys.executable, "-m", "analysis.plan", "--constants=muennighoff_c4",
                        "--compute=1e21", "--unique=1e10"], capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).resolve().parents[2])
  assert res.returncode == 0, res.stderr
  out = json.loads(res.stdout)
  assert res.stderr.strip() == out["sentence"] and out["constraint"] == "C = 6 N D"


def test_verdict_needs_separated_cis():
  fam = lambda loss, lo, hi: dict(status="ok", loss=loss, ci={"loss": [lo, hi]})
  assert plan.verdict({"ar": fam(2.0, 1.9, 2.1), "mdm": fam(2.3, 2.2, 2.4)})[0] == "ar"
  assert plan.verdict({"ar": fam(2.0, 1.9, 2.25), "mdm": fam(2.3, 2.2, 2.4)})[0] == "inconclusive"
  no_ci = dict(status="ok", loss=2.0)
  assert plan.verdict({"ar": no_ci, "mdm": fam(2.3, 2.2, 2.4)})[0] == "inconclusive"
  assert plan.verdict({"ar": no_ci})[0] is None


@pytest.mark.parametrize("argv, message", [
    (["--constants=muennighoff_c4", "--compute=0", "--unique=1e9"], "--compute=0 must be"),
    (["--constants=muennighoff_c4", "--compute=1e20", "--unique=-5"], "--unique=-5 must be"),
    (["--constants=muennighoff_c4", "--compute=nan", "--unique=1e9"], "--compute=nan must be"),
    (["--constants=hoffmann", "--compute=1e20", "--unique=1e9"], "is not a published set"),
    (["--constants=prabhudesai_mdm", "--compute=1e20", "--unique=1e9"], "publish only R_D*"),
    (["--runs=/nonexistent/grid", "--compute=1e20", "--unique=1e9"], "is not a directory"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
  rc, out, err = _run(capsys, *argv)
  assert rc == 2 and out == "" and err.startswith("error: ") and message in err
  assert err.count("\n") == 1


def test_runs_without_a_fittable_law_exit_2(tmp_path, capsys):
  from helpers.fakeruns import make_run
  for e in (1, 4):
    make_run(tmp_path / "runs", objective="ar", n=1e5, u=1e6, epochs=e)
  rc, out, err = _run(capsys, f"--runs={tmp_path / 'runs'}", "--compute=1e15", "--unique=1e7",
                      "--n_boot=0")
  assert rc == 2 and out == "" and err.count("\n") == 1
  assert err.startswith("error: no family's data-constrained law can be fitted") and "ar: " in err


def test_runs_plan_needs_exactly_one_source(capsys):
  for argv in (["--compute=1e20", "--unique=1e9"],
               ["--runs=x", "--constants=muennighoff_c4", "--compute=1e20", "--unique=1e9"]):
    with pytest.raises(SystemExit) as e:
      plan.main(argv)
    assert e.value.code == 2
  capsys.readouterr()


@pytest.mark.slow
def test_plan_from_fabricated_runs_picks_the_better_family(tmp_path, capsys):
  """Fabricated grid (helpers/fakeruns.py): AR's law is better per token at every size, so AR
  must win, and the true AR optimum's loss lies in its bootstrap CI."""
  from helpers.fakeruns import LAWS, make_grid
  make_grid(tmp_path / "runs", sizes=(1e5, 1e6, 3e6))
  rc, out, _ = _run(capsys, f"--runs={tmp_path / 'runs'}", "--compute=1e15", "--unique=1e7",
                    "--n_boot=20", "--grid=coarse")
  assert rc == 0
  res = json.loads(out)
  assert res["winner"] == "ar"
  p = LAWS["ar"]
  truth = dict(a=math.log(p["A"]), b=math.log(p["B"]), e=math.log(p["E"]), alpha=p["alpha"],
               beta=p["beta"], rd=math.log(p["R_D_star"]), rn=math.log(1e4))
  true_loss = float(plan.optimum(plan._as_theta(truth), 1e15, 1e7)["loss"][0])
  lo, hi = res["families"]["ar"]["ci"]["loss"]
  assert lo <= true_loss <= hi
  # the true optimum (7.7M parameters) lies beyond the largest size fabricated (3M): flagged
  assert res["families"]["ar"]["extrapolated"] == ["N"]
