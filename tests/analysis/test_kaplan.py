"""Kaplan laws: synthetic points from the published constants are recovered; bad input and
unidentifiable parameters are reported, not headlined."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import fit as fit_cli
from analysis.laws import kaplan as lk
from analysis.render import laws as laws_md
from dlmscale.errors import UserError

PUB = lk.PUBLISHED


def _noisy(loss, seed, sd=0.003):
  return loss * np.exp(np.random.default_rng(seed).normal(0.0, sd, np.shape(loss)))


def _within_ci(fitted: dict, truth: dict, names) -> None:
  for name in names:
    lo, hi = fitted["bootstrap"]["ci"][name]
    assert lo <= truth[name] <= hi, (name, lo, truth[name], hi)


def test_objective_gradients_match_finite_differences():
  rng = np.random.default_rng(0)
  log_n, log_d = np.log(rng.uniform(1e6, 1e9, 12)), np.log(rng.uniform(1e8, 1e11, 12))
  log_l = np.log(rng.uniform(2.0, 4.0, 12))
  for fun, x in ((lk.joint_objective(log_n, log_d, log_l, delta=1.0), [0.08, 0.1, 31.0, 30.0]),
                 (lk.power_objective(log_n, log_l, delta=1.0), [0.08, 3.0])):
    x = np.array([x])
    _, g = fun(x, np.array([0]))
    eye = np.eye(x.shape[1]) * 1e-6
    num = [(fun(x + e, None)[0] - fun(x - e, None)[0])[0] / 2e-6 for e in eye]
    np.testing.assert_allclose(g[0], num, rtol=1e-5)


@pytest.mark.parametrize("form", ["N", "D"])
def test_power_law_recovers_published_constants(form):
  """Size- (data-) limited points from Kaplan's L(N) (L(D)), 0.3% noise: the exponent within 5%
  and both constants inside their bootstrap CIs."""
  x = np.geomspace(1e6, 1e10, 9) if form == "N" else np.geomspace(1e8, 1e12, 9)
  truth = PUB[form]
  loss = _noisy(lk.predict(form, truth, x), seed=1)
  f = lk.fit(form, (x,), loss)
  out = dict(f.named(), bootstrap=lk.bootstrap(form, (x,), loss, f, n_boot=100, seed=0))
  a = f"a_{form}"
  assert f.params[a] == pytest.approx(truth[a], rel=0.05)
  _within_ci(out, truth, (a, f"{form}_c"))
  assert f.at_bound == () and f.unidentified == ()


def test_compute_frontier_selects_the_envelope_and_recovers_a_c():
  """Runs above the frontier (too small or too large for their compute) are ignored."""
  c = np.geomspace(1e17, 1e23, 13)
  truth = PUB["C"]
  on = _noisy(lk.predict("C", truth, c), seed=2, sd=0.002)
  above = on * 1.05  # an off-optimal run at every compute
  cs, ls = lk.frontier_points(np.concatenate([c, c * 1.01]), np.concatenate([on, above]))
  np.testing.assert_allclose(cs, c)
  np.testing.assert_allclose(ls, on)
  f = lk.fit("C", (cs,), ls)
  out = dict(f.named(), bootstrap=lk.bootstrap("C", (cs,), ls, f, n_boot=100, seed=0))
  assert f.params["a_C"] == pytest.approx(0.050, rel=0.05)
  _within_ci(out, truth, ("a_C", "C_c"))


def _joint_csv(path, seed=3):
  n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e6, 1e10, 7), np.geomspace(1e8, 1e14, 7)))
  loss = _noisy(lk.predict("joint", PUB["joint"], n, d), seed=seed, sd=0.002)
  rows = "".join(f"{a:.6g},{b:.6g},{c:.8g}\n" for a, b, c in zip(n, d, loss))
  path.write_text("N_params,D_tokens,loss\n" + rows)
  return path


def test_fit_cli_kaplan_recovers_joint_exponents(tmp_path, capsys):
  csv = _joint_csv(tmp_path / "kaplan.csv")
  assert fit_cli.main(["--law=kaplan", f"--csv={csv}", "--bootstrap=50"]) == 0
  out = json.loads(capsys.readouterr().out)
  joint = out["joint"]
  assert joint["status"] == "ok" and joint["n_points"] == 49 and joint["unidentified"] == []
  for name in ("a_N", "a_D"):
    assert joint["params"][name] == pytest.approx(PUB["joint"][name], rel=0.05)
  _within_ci(joint, PUB["joint"], ("a_N", "a_D"))
  # four 95% CIs all covering the truth happens only ~80% of the time: the scales get 5%
  for name in ("N_c", "D_c"):
    assert joint["params"][name] == pytest.approx(PUB["joint"][name], rel=0.05)
  # at D = 1e14 every size is size-limited, so the L(N) envelope sees the joint law's a_N
  assert out["N"]["params"]["a_N"] == pytest.approx(0.076, rel=0.05)
  assert out["compute"] == "6 N D" and out["overfit_rule"]["n_points"] == 49


def test_unidentifiable_parameters_are_flagged_not_headlined():
  """Loss that does not depend on D: a power law in D puts a_D on its bound, and the joint law's
  D term is negligible everywhere, so neither a_D nor D_c is a finding."""
  n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5)))
  loss = _noisy(lk.predict("N", PUB["N"], n), seed=4, sd=0.001)
  wobble = np.exp([0.001, -0.001, 0.0, 0.001, -0.001])
  flat = lk.fit("D", (np.geomspace(1e8, 1e11, 5),), 3.0 * wobble)
  assert "a_D" in flat.at_bound and "a_D" in flat.unidentified
  fam = lk.fit_all(n, d, loss, n_boot=0)
  assert {"a_D", "log_D_c"} <= set(fam["joint"]["unidentified"])
  assert "a_N" not in fam["joint"]["unidentified"]
  fam["D"] = dict(status="ok", **flat.named())
  text = "\n".join(laws_md.kaplan_lines({"ar": fam}))
  assert text.count("a_D not identified") == 2 and "D_c not identified" in text
  assert f"a_N = {fam['N']['params']['a_N']:.3g}" in text


def test_power_law_on_one_x_value_is_refused():
  with pytest.raises(UserError, match="needs >= 3 distinct x values, got 1"):
    lk.fit("N", (np.full(4, 1e6),), np.array([3.0, 3.1, 2.9, 3.0]))


def test_too_few_distinct_values_are_not_identifiable():
  n = np.array([1e6, 1e6, 2e6, 2e6, 1e6, 2e6])
  d = np.array([1e8, 2e8, 1e8, 2e8, 4e8, 4e8])
  fam = lk.fit_all(n, d, 3.0 * (d / 1e8) ** -0.05 * (n / 1e6) ** -0.01, n_boot=0)
  assert fam["N"]["status"] == "not identifiable"
  assert "2 point(s) on the loss frontier over N" in fam["N"]["reason"]
  assert fam["joint"]["status"] == "not identifiable"
  assert fam["D"]["status"] == "ok"


def test_fit_cli_kaplan_bad_input_exits_2_with_one_line(tmp_path, capsys):
  few = tmp_path / "few.csv"
  few.write_text("N_params,D_tokens,loss\n1e8,1e9,3.0\n2e8,2e9,2.9\n")
  assert fit_cli.main(["--law=kaplan", f"--csv={few}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: no Kaplan law is identifiable") and err.count("\n") == 1
  assert "L(N): 2 point(s) on the loss frontier over N" in err
  bad = tmp_path / "bad.csv"
  bad.write_text("N_params,D_tokens,loss\n" + "".join(
      f"{1e8 * (i + 1)},{1e9 * (i + 1)},{-1.0 if i == 2 else 3.0 - 0.1 * i}\n" for i in range(6)))
  assert fit_cli.main(["--law=kaplan", f"--csv={bad}"]) == 2
  assert "loss must be positive" in capsys.readouterr().err
  flat = tmp_path / "two_sizes.csv"
  flat.write_text("N_params,D_tokens,loss\n1e6,1e8,3.1\n1e6,1e8,3.0\n2e6,1e8,2.9\n")
  assert fit_cli.main(["--law=kaplan", f"--csv={flat}"]) == 2
  assert "no Kaplan law is identifiable" in capsys.readouterr().err
  assert fit_cli.main(["--law=kaplan", f"--csv={few}", "--c_col=flops"]) == 2
  assert "'flops' (the c column, set with --c_col)" in capsys.readouterr().err


def test_family_fit_uses_dataset_size_and_early_stopped_loss():
  """law_fits.kaplan_family: D is the unique-token budget (not tokens seen) and the loss the
  best (early-stopped) one, as in Kaplan et al.; the final loss, worse after overfitting, must
  not leak into L(N, D)."""
  import pandas as pd

  from analysis.findings import law_fits
  rows = []
  for n in np.geomspace(1e6, 1e10, 6):
    for u in np.geomspace(1e8, 1e14, 6):
      best = float(lk.predict("joint", PUB["joint"], n, u))
      rows.append(dict(N=n, unique_tokens=u, D=4 * u, C=6 * n * 4 * u, best_loss=best,
                       loss=best * 1.1, epochs=4.0))
  fam = law_fits.kaplan_family(pd.DataFrame(rows), n_boot=0, seed=0)
  for name in ("a_N", "a_D", "N_c", "D_c"):
    assert fam["joint"]["params"][name] == pytest.approx(PUB["joint"][name], rel=1e-3)
  assert fam["C"]["status"] == "ok" and fam["C"]["n_points"] >= 3


def test_compute_frontier_of_one_size_is_not_c_min():
  """One size's runs trace its own training curve over compute; Kaplan's C_min is the envelope over
  sizes, so a single size leaves L(C_min) unidentified even with enough points."""
  d = np.geomspace(1e8, 1e10, 6)
  loss = 3.0 * (d / 1e8) ** -0.05
  one = lk.fit_all(np.full(6, 1e6), d, loss, n_boot=0)
  assert one["C"]["status"] == "not identifiable" and "1 model size" in one["C"]["reason"]
  two = lk.fit_all(np.repeat([1e6, 4e6], 3), d, loss, n_boot=0)
  assert two["C"]["status"] != "not identifiable"
