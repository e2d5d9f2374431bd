"""End to end: the report on a fabricated (incomplete) grid; the commands' handling of bad input."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

from analysis import fit as fit_cli
from analysis import report
from helpers.fakeruns import make_grid, make_run

REPO = pathlib.Path(__file__).resolve().parents[2]
from analysis.reference import DIR as REF
UNFINISHED = "ar_m100K_U1e+06_E64_s0"
FIGURES = ("loss_vs_flops", "loss_vs_epochs", "loss_vs_size", "law_contours", "c_crit", "residuals")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
  root = tmp_path_factory.mktemp("grid")
  names = make_grid(root / "runs", sizes=(1e5, 1e6, 3e6), unfinished=(UNFINISHED,),
                    mc_accuracy=0.3)
  manifest = {"runs": [{"run_name": n, "state": "done"} for n in names]
              + [{"run_name": "mdm_m10000K_U1e+07_E64_s0", "state": "pending"}]}
  (root / "runs" / "grid_manifest.json").write_text(json.dumps(manifest))
  rc = report.main([f"--runs={root / 'runs'}", f"--out={root / 'out'}", "--n_boot=20",
                    "--grid=coarse"])
  assert rc == 0
  out = root / "out"
  return out, json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()


def test_report_writes_tables_figures_and_fits(reported):
  out, fits, _ = reported
  for name in ("runs", "curves"):
    assert (out / f"{name}.csv").stat().st_size > 0 and (out / f"{name}.parquet").exists()
  for fig in FIGURES:
    assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    assert (out / "figures" / f"{fig}.pdf").exists()
  assert fits["grid"]["n_runs"] == 72 and fits["grid"]["n_finished"] == 71
  assert fits["grid"]["manifest"]["n_missing"] == 1


def test_report_findings_recover_the_fabricated_truth(reported):
  _, fits, _ = reported
  for b in fits["epochs"]["per_budget"]:
    if b["objective"] == "ar":  # AR overfits past 8 epochs by construction: the 64-epoch runs
      assert b["best_epochs"] == 16 and 8 <= b["best_epoch"] <= 16  # never reach the 16's best
    else:  # MDM keeps improving
      assert b["best_epochs"] == 64 and b["verdict"] == "best at the end"
  cross = {b["unique_tokens"]: b for b in fits["crossover"]["per_budget"]}
  assert cross[1e6]["status"] == "crosses" and cross[3e6]["status"] == "crosses"
  assert cross[1e6]["c_crit"] < cross[3e6]["c_crit"]  # more unique data -> later crossover
  assert fits["crossover"]["c_crit_fit"]["exponent"] > 0
  d = fits["fits"]["datacons"]
  assert d["ar"]["status"] == d["mdm"]["status"] == "ok"
  assert d["mdm"]["params"]["R_D_star"] > 5 * d["ar"]["params"]["R_D_star"]
  assert fits["fits"]["R_D_star_ratio_mdm_over_ar"]["ci"][0] > 1
  chin = fits["fits"]["chinchilla"]["ar"]
  assert chin["status"] == "ok" and chin["params"]["alpha"] == pytest.approx(0.34, abs=0.03)
  assert all(r["points"][-1]["accuracy"] == pytest.approx(0.3) for r in fits["task"]["runs"])
  task = fits["task"]  # eval.json holds the final checkpoint only: no curve, and the report says so
  assert task["runs"] and all(r["source"].startswith("eval.json") for r in task["runs"])
  assert "split='mc'" in task["trainer_must_record"]


def test_report_markdown_says_what_is_missing_and_shows_figures(reported):
  _, _, md = reported
  assert f"Not finished (1): {UNFINISHED}" in md
  assert "| mdm_m10000K_U1e+07_E64_s0 | pending | missing |" in md
  assert "![loss vs FLOPs](figures/loss_vs_flops.png)" in md


def _pm3(value: float, se: float) -> str:
  return f"{value:.3f} ± {se:.3f}"


def test_report_markdown_numbers_are_the_ones_in_fits_json(reported):
  """Every number a reader takes from report.md is the one in fits.json, in its own sentence."""
  _, fits, md = reported
  fam = {"ar": "AR", "mdm": "MDM"}
  lines = md.splitlines()
  for b in fits["epochs"]["per_budget"]:  # the fake runs carry curves: read at their best
    u = f"{b['unique_tokens'] / 1e6:g}M"
    rise = (_pm3(b["rise_after"], b["rise_after_se"]) if b["rise_after_se"] > 0
            else f"{b['rise_after']:.3f}")
    row = (f"| {u} | {fam[b['objective']]} | {b['model_size']} | {b['best_epoch']:.3g} of "
           f"{b['last_epochs']:g} | {_pm3(b['best_loss'], b['best_se'])} | "
           f"{_pm3(b['last_loss'], b['last_se'])} | {rise} |")
    assert any(l.startswith(row) for l in lines), row
  for b in fits["crossover"]["per_budget"]:
    u = f"{b['unique_tokens'] / 1e6:g}M"
    (line,) = [l for l in lines if l.startswith(f"- U = {u}: ")]
    if b["status"] == "crosses":
      assert f"C_crit = {b['c_crit']:.3g} FLOPs (loss {b['loss_at_crossing']:.3f})" in line
      assert f"AR − MDM = {_pm3(b['gap_at_max'], b['gap_se_at_max'])}" in line
    else:
      assert b["status"] == "mdm_never_below", b["status"]
      lo, hi = b["c_range"]
      assert f"MDM stays above AR over the shared compute range {lo:.3g}–{hi:.3g} FLOPs" in line
      assert f"(gap at the top {_pm3(b['gap_at_max'], b['gap_se_at_max'])}" in line
      assert ("inconclusive" in line) == (b.get("gap_verdict") in ("inconclusive", "no interval"))
      assert "C_crit =" not in line
  fit = fits["crossover"]["c_crit_fit"]
  assert f"C_crit(U) = {fit['coef_at_1e6']:.3g} × (U/1e6)^{fit['exponent']:.2f}" in md
  for f, d in fits["fits"]["datacons"].items():
    (line,) = [l for l in lines if l.startswith(f"- {fam[f]}, data-constrained law")]
    assert f"R_D* = {d['params']['R_D_star']:.3g}" in line and f"{d['n_points']} points" in line
    lo, hi = d["bootstrap"]["ci"]["R_D_star"]
    assert f"(95% CI {lo:.3g}–{hi:.3g})" in line
  ratio = fits["fits"]["R_D_star_ratio_mdm_over_ar"]
  assert (f"R_D*(MDM) / R_D*(AR) = {ratio['value']:.3g} (95% CI {ratio['ci'][0]:.3g}–"
          f"{ratio['ci'][1]:.3g})") in md
  c = fits["fits"]["chinchilla"]["ar"]
  (line,) = [l for l in lines if l.startswith("- AR, Chinchilla approach 3")]
  se = c["bootstrap"]["se"]
  assert f"alpha = {_pm3(c['params']['alpha'], se['alpha'])}" in line
  assert f"E = {_pm3(c['params']['E'], se['E'])}" in line


@pytest.mark.parametrize("rise,se,best_e,phrase", [
    (0.05, 0.01, 16.0, "(significant)"),       # rise > 2 SE
    (0.015, 0.01, 16.0, "(within 2 SE, inconclusive)"),  # rise <= 2 SE
    (0.021, 0.01, 16.0, "(significant)"),      # just above the line
    (0.0, 0.01, 64.0, "final loss is lowest at the largest epoch"),      # best at the largest E tried
])
def test_epoch_sentences_follow_their_intervals(rise, se, best_e, phrase):
  from analysis.render import epochs as epochs_md
  b = dict(objective="ar", unique_tokens=1e6, model_size="m100K", best_epochs=best_e,
           best_loss=3.0, best_se=0.004, rise_after=rise, rise_after_se=se, last_epochs=64.0)
  text = "\n".join(epochs_md.epochs_section(dict(per_budget=[b]), []))
  others = {"(significant)", "(within 2 SE, inconclusive)", "final loss is lowest at the largest epoch"} - {phrase}
  assert phrase in text and not any(o in text for o in others), text


def test_report_on_a_tiny_grid_degrades_to_not_identifiable(tmp_path):
  for e in (1, 4):
    make_run(tmp_path / "runs", objective="ar", n=1e5, u=1e6, epochs=e)
  rc = report.main([f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}", "--n_boot=0",
                    "--no_plots"])
  assert rc == 0
  fits = json.loads((tmp_path / "out" / "fits.json").read_text())
  assert fits["fits"]["chinchilla"]["ar"]["status"] == "not identifiable"
  assert fits["fits"]["datacons"]["ar"]["status"] == "not identifiable"
  assert fits["crossover"]["per_budget"][0]["status"] == "needs both families"


def test_report_flags_an_epoch_wise_double_descent_bump(tmp_path):
  make_grid(tmp_path / "runs", sizes=(1e6,), budgets=(1e6,), epochs=(1, 2, 4, 8, 16, 32),
            objectives=("mdm",), bump=0.3)
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}",
                      "--n_boot=0", "--no_plots"]) == 0
  dd = json.loads((tmp_path / "out" / "fits.json").read_text())["double_descent"]
  peaked = [s for s in dd["series"] if s["peaks"]]
  assert [(s["axis"], s["model_size"], s["peaks"][0]["x"]) for s in peaked] == [("epoch", "m1000K", 8.0)]
  assert peaked[0]["peaks"][0]["rise_z"] > 2 and peaked[0]["peaks"][0]["fall_z"] > 2
  md = (tmp_path / "out" / "report.md").read_text()
  assert "| Epoch-wise (separate runs) | MDM | m1000K, U = 1M | 6 | independent | peak at E = 8 " in md


def _cli(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_report_cli_without_finished_runs_exits_2_without_traceback(tmp_path):
  make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=2, finished=False)
  res = _cli("analysis.report", f"--runs={tmp_path}", f"--out={tmp_path / 'out'}")
  assert res.returncode == 2
  assert res.stderr.startswith("error: no finished run") and "Traceback" not in res.stderr


def test_fit_cli_missing_column_exits_2_naming_it(tmp_path):
  res = _cli("analysis.fit", "--law=datacons", f"--csv={REF / 'datablations_runs_fit182.csv'}",
             "--u_col=unique")
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert "'unique' (the u column, set with --u_col)" in res.stderr


def test_fit_cli_rejects_too_few_points_and_bad_losses(tmp_path, capsys):
  few = tmp_path / "few.csv"
  few.write_text("N_params,D_tokens,loss\n1e8,1e9,3.0\n2e8,2e9,2.9\n4e8,4e9,2.8\n")
  assert fit_cli.main(["--law=chinchilla", f"--csv={few}"]) == 2
  assert "needs more points than its 5 free parameters, got 3" in capsys.readouterr().err
  bad = tmp_path / "bad.csv"
  rows = "".join(f"{1e8 * (i + 1)},{1e9 * (i + 1)},{-1.0 if i == 2 else 3.0 - 0.1 * i}\n"
                 for i in range(8))
  bad.write_text("N_params,D_tokens,loss\n" + rows)
  assert fit_cli.main(["--law=chinchilla", f"--csv={bad}"]) == 2
  assert "loss must be positive" in capsys.readouterr().err
  assert fit_cli.main(["--law=chinchilla", f"--csv={tmp_path / 'nope.csv'}"]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_fit_cli_prints_published_datacons_constants(capsys):
  rc = fit_cli.main(["--law=datacons", f"--csv={REF / 'datablations_runs_fit182.csv'}",
                     "--frozen_base", "--search=published"])
  assert rc == 0
  out = json.loads(capsys.readouterr().out)
  assert out["R_D_star"] == pytest.approx(15.39, abs=0.15)
  assert out["R_N_star"] == pytest.approx(5.31, abs=0.03)
  assert out["columns"]["loss"] == "val_loss" and out["n_points"] == 182


def test_report_averages_seeds_with_their_spread_in_the_standard_error(tmp_path):
  """Two seeds per point: fits.json's loss is their mean and its SE combines the eval SE with the
  seed spread, sqrt(SE_eval^2 + s^2 / 2) with s the two finals' sample standard deviation."""
  make_grid(tmp_path / "runs", sizes=(1e5,), budgets=(1e6,), epochs=(1, 4, 16), objectives=("ar",),
            seeds=(0, 1), noise=0.05)
  assert report.main([f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}", "--n_boot=0",
                      "--no_plots"]) == 0
  fits = json.loads((tmp_path / "out" / "fits.json").read_text())
  per_size = {s["model_size"]: s for s in fits["epochs"]["per_size"]}["m100K"]
  finals = {}
  for e in (1, 4, 16):
    for s in (0, 1):
      summ = json.loads((tmp_path / "runs" / f"ar_m100K_U1e+06_E{e}_s{s}" / "summary.json").read_text())
      finals.setdefault(e, []).append((summ["final_eval_loss"], summ["final_eval_loss_se"]))
  def mean_se(e):
    (a, sa), (b, sb) = finals[e]
    spread2 = (a - b) ** 2 / 2  # the sample variance of two values
    return (a + b) / 2, math.sqrt((sa ** 2 + sb ** 2) / 2 + spread2 / 2)
  # the runs carry curves, so each is read at its best evaluation (seeds averaged) and the rise
  # is to the end of the same runs
  bests = {e: [(json.loads((tmp_path / "runs" / f"ar_m100K_U1e+06_E{e}_s{s}" / "summary.json")
                           .read_text())["best_eval_loss"], 0.004) for s in (0, 1)] for e in finals}
  def mean_se_of(table, e):
    (a, sa), (b, sb) = table[e]
    return (a + b) / 2, math.sqrt((sa ** 2 + sb ** 2) / 2 + (a - b) ** 2 / 2 / 2)
  best_e = min(bests, key=lambda e: mean_se_of(bests, e)[0])
  assert per_size["best_epochs"] == best_e
  assert per_size["best_loss"] == pytest.approx(mean_se_of(bests, best_e)[0], rel=1e-12)
  assert per_size["best_se"] == pytest.approx(mean_se_of(bests, best_e)[1], rel=1e-9)
  assert per_size["best_se"] > 0.004 * 1.5  # the seed spread is in it, not just the eval SE
  assert per_size["last_loss"] == pytest.approx(mean_se(best_e)[0], rel=1e-12)
  assert per_size["last_se"] == pytest.approx(mean_se(best_e)[1], rel=1e-9)
