"""The study's answer (issue 21): crossover present / absent / inconclusive with its interval or
bound, C_crit(U) recovered across budgets, the learning-rate choice from tuning-set losses only,
the paired gap between the families' bests, and the task over training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.findings import answer, critical, paired, points
from analysis.render import answer as answer_md
from analysis.render import laws as laws_md
from analysis.runs import collect, tables
from dlmscale import run_dir as rundir
from dlmscale.train import task_curve
from helpers.fakeruns import make_run, save_eval_losses

LOG_C = np.linspace(12.0, 15.0, 7)  # log10 FLOPs of the grid's runs


def _points(u: float, ar_loss, mdm_loss, se: float) -> list[dict]:
  rows = []
  for obj, losses in (("ar", ar_loss), ("mdm", mdm_loss)):
    for i, (x, l) in enumerate(zip(LOG_C, losses)):
      rows.append(dict(objective=obj, unique_tokens=u, model_size=f"s{i}", epochs=1.0,
                       label_noise=0.0, num_orders=1, N=1e6, C=10 ** x, C_6ND=10 ** x,
                       loss=float(l), se=se))
  return rows


def _lines(x_cross: float, slope_gap: float = 0.2):
  """AR falls 0.1 per decade; MDM falls faster and crosses it at log10 C = x_cross."""
  ar = 4.0 - 0.1 * (LOG_C - 12)
  return ar, ar - slope_gap * (LOG_C - x_cross)


def test_crossover_present_absent_and_inconclusive_per_budget():
  ar, mdm = _lines(13.5)
  rows = _points(1e6, ar, mdm, 0.005)  # crosses at 10^13.5, MDM 0.3 ahead at the top
  rows += _points(2e6, ar, ar + 0.2, 0.005)  # MDM 0.2 behind everywhere
  rows += _points(3e6, ar, ar + 0.05 - 0.06 * (LOG_C == 15.0), 0.01)  # dips 0.01 below at the top
  rows += _points(1e5, ar, ar + 0.2, 0.005)  # the published law predicts 1.4e13 here: inside
  out = critical.findings(pd.DataFrame(rows), n_boot=100, seed=0)
  by = {b["unique_tokens"]: b for b in out["per_budget"]}
  present, absent, unsure = by[1e6], by[2e6], by[3e6]
  for b in out["per_budget"]:  # C_6ND = C in these points: the same range on both axes
    assert b["c_range_6nd"] == pytest.approx(b["c_range"])
    assert b["published_c_crit_6nd"] == pytest.approx(2.12e15 * (b["unique_tokens"] / 1e6) ** 2.174)
  assert absent["published_in_range"] == "above" and by[1e5]["published_in_range"] == "inside"
  assert "cannot test it" in answer_md._cross_sentence(absent)
  assert "1.42e+13 FLOPs for this U in 6ND, N with the embedding" in answer_md._cross_sentence(by[1e5])
  assert "contradicts the extrapolation" in answer_md._cross_sentence(by[1e5])
  assert present["verdict"] == "crosses" and present["c_crit"] == pytest.approx(10 ** 13.5, rel=1e-6)
  lo, hi = present["c_crit_ci"]
  assert lo < 10 ** 13.5 < hi and hi / lo < 1.5 and present["frac_crossing"] == 1.0
  assert absent["verdict"] == "no crossover" and absent["bound"] == pytest.approx(1e15)
  assert unsure["status"] == "crosses" and unsure["verdict"] == "inconclusive"
  assert 0.0 < unsure["frac_crossing"] < 1.0
  assert out["c_crit_fit"]["status"] == "not fitted" and "at 1 budget(s)" in out["c_crit_fit"]["reason"]
  text = "\n".join(laws_md.crossover_section(out))
  assert "no crossover up to C = 1e+15 FLOPs" in text
  assert f"95% CI {lo:.3g}–{hi:.3g} over the resamples that cross (100% of them)" in text
  assert "U = 3M: inconclusive" in text and "C_crit(U) is not fitted" in text
  words = {u: answer_md._cross_sentence(by[u]) for u in by}
  assert words[2e6].startswith("no crossover up to C = 1e+15") and "inconclusive" in words[3e6]
  # an inconclusive budget claims no C_crit of its own (the published law's stands beside it)
  assert "C_crit =" in words[1e6] and "C_crit" not in words[3e6].split("; the published law")[0]


def test_c_crit_power_law_is_recovered_across_budgets_with_an_interval():
  a_true, k_true = 2.0, 1e13  # C_crit = k (U/1e6)^a
  budgets = (1e6, 10 ** 6.25, 10 ** 6.5, 10 ** 6.75)
  rows = []
  for u in budgets:
    rows += _points(u, *_lines(np.log10(k_true * (u / 1e6) ** a_true)), 0.003)
  out = critical.findings(pd.DataFrame(rows), n_boot=100, seed=1)
  fit = out["c_crit_fit"]
  assert fit["status"] == "ok" and fit["n_points"] == 4 and fit["flops"].startswith("6ND")
  assert fit["exponent"] == pytest.approx(a_true, abs=0.01)
  assert fit["coef_at_1e6"] == pytest.approx(k_true, rel=0.02)
  lo, hi = fit["exponent_ci"]
  assert lo < a_true < hi and hi - lo < 0.2
  assert fit["published_at_budgets"][0] == pytest.approx(2.12e15)
  text = "\n".join(answer_md.answer_section([], out, {}))
  assert f"a = {fit['exponent']:.2f} (95% CI {lo:.2f}–{hi:.2f})" in text and "2.174" in text


def test_learning_rate_is_chosen_on_tuning_losses_only(tmp_path):
  """Tuning runs put AR's optimum at 1e-3 and MDM's at 3e-3; validation runs at 1e-2 score far
  lower (on another set) and must not move the choice."""
  for obj, best in (("ar", 1e-3), ("mdm", 3e-3)):
    for lr in (3e-4, 1e-3, 3e-3, 1e-2):
      make_run(tmp_path, objective=obj, n=1e5, u=1e6, epochs=1, name=f"tune-{obj}-{lr:g}",
               loss_shift=0.1 * abs(np.log10(lr / best)),
               config_extra={"eval.set": collect.TUNING_SET, "optim.lr": lr})
    make_run(tmp_path, objective=obj, n=1e5, u=1e6, epochs=1, name=f"claim-{obj}",
             loss_shift=-1.0, config_extra={"optim.lr": 1e-2})
  runs = collect.collect(tmp_path).runs
  sweep = {s["objective"]: s for s in answer.lr_sweep(runs)}
  assert sweep["ar"]["chosen_lr"] == 1e-3 and sweep["mdm"]["chosen_lr"] == 3e-3
  assert [p["lr"] for p in sweep["ar"]["points"]] == [3e-4, 1e-3, 3e-3, 1e-2]
  assert not sweep["ar"]["at_edge"] and sweep["ar"]["used_by_claims"] == [1e-2]
  assert sweep["mdm"]["runner_up"]["verdict"] == "positive"
  pts = points.points(points.claim_runs(runs))  # the tuning runs never become grid points
  assert sorted(pts["runs"]) == ["claim-ar", "claim-mdm"]
  text = "\n".join(answer_md.lr_section(list(sweep.values())))
  assert "| AR | m100K (U = 1M, E = 1) |" in text and "| 0.001 |" in text



def test_bests_gap_is_paired_and_the_task_curve_is_read_over_training(tmp_path):
  rng = np.random.default_rng(0)
  doc_N = np.repeat(np.arange(40), 2)
  base_N = 4.0 + rng.normal(0, 1.0, 40)[doc_N]
  runs = [make_run(tmp_path, objective="ar", n=1e6, u=1e6, epochs=e, name=f"ar-e{e}") for e in (1, 64)]
  runs.append(make_run(tmp_path, objective="mdm", n=1e6, u=1e6, epochs=16, name="mdm-e16",
                       loss_shift=-0.5))
  for run in runs:
    save_eval_losses(run, base_N, doc_N, rng, noise=0.01)
  # AR overfits past 8 epochs (its best evaluation of 4 is at epoch 16); the task, scored at each
  # evaluation, falls after it
  with (runs[1] / "metrics.jsonl").open("a") as fh:
    for k, (acc, gap) in enumerate([(0.40, 0.30), (0.38, 0.25), (0.35, 0.2), (0.32, 0.12)]):
      fh.write(json.dumps(dict(split="mc", step=100 * (k + 1), epoch=16.0 * (k + 1), mc_accuracy=acc,
                               mc_accuracy_se=0.01, mc_nll_gap=gap, mc_nll_gap_se=0.02)) + "\n")
  c = collect.collect(tmp_path)
  pts = points.clean(points.points(c.runs))
  (b,) = answer.bests(pts, c.runs)
  g = b["gap"]
  ar = b["families"]["ar"]
  assert g["se_kind"] == paired.PAIRED and g["se"] < 0.01 and g["verdict"] == "positive"
  assert g["ar_minus_mdm"] == pytest.approx(ar["loss"] - b["families"]["mdm"]["loss"])
  assert ar["runs"] == ["ar-e64"] and ar["best_epoch"] < 20 and ar["best_flops"] > 0
  task = answer.task_over_training([b], c.runs, c.curves)
  (r,) = task["runs"]
  assert r["run_name"] == "ar-e64" and r["source"].startswith("metrics.jsonl") and len(r["points"]) == 4
  ch = r["accuracy_change_after_best"]
  assert (ch["from_epoch"], ch["to_epoch"]) == (16.0, 64.0) and ch["value"] == pytest.approx(-0.08)
  assert ch["verdict"] == "negative" and r["nll_gap_change_after_best"]["verdict"] == "negative"
  # a best between two task points is read from the later one: only what came after the optimum
  assert answer.task_point_after(r["points"], 20.0)["epoch"] == 32.0
  assert answer.task_point_after(r["points"], 16.0)["epoch"] == 16.0
  assert answer.task_point_after(r["points"], 70.0)["epoch"] == 64.0
  assert task["trainer_must_record"] is None and task["without_task"] == ["mdm-e16"]
  md = "\n".join(answer_md.task_section(task))
  assert "accuracy fell (-0.080 ± 0.014) and the gap fell (-0.180 ± 0.028)" in md
  assert "independent" in r["accuracy_change_after_best"]["se_kind"]
  # with per-item scores beside the mc rows, the change is paired item by item
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 50)
  credit_at = (rng.random(50) < 0.4).astype(float)
  gap_at = rng.normal(0.3, 1.0, 50)
  for step, credit, gap in ((100, credit_at, gap_at), (400, np.where(np.arange(50) < 4, 0.0, credit_at),
                                                       gap_at - 0.1 + rng.normal(0, 0.01, 50))):
    task_curve.save_item_scores(rundir.losses_path(runs[1], step, "mc"), dict(
        credit_N=credit, nll_gap_N=gap, label_N=labels, scores_NxC=np.zeros((50, 4))))
  (r,) = answer.task_over_training([b], collect.collect(tmp_path).runs, c.curves)["runs"]
  ch, gap = r["accuracy_change_after_best"], r["nll_gap_change_after_best"]
  assert ch["se_kind"] == gap["se_kind"] == paired.PAIRED_ITEMS and gap["n_items"] == 50
  assert gap["se"] < 0.01 and gap["verdict"] == "negative"  # every item's gap fell by about 0.1
  assert ch["n_items_changed"] == int(credit_at[:4].sum())
  text = "\n".join(answer_md.answer_section([b], dict(per_budget=[]), {}))
  assert f"AR − MDM = {g['ar_minus_mdm']:.3f} (95% CI" in text and "diffusion's best is lower" in text


def _mc_rows(run, rows) -> None:
  with (run / "metrics.jsonl").open("a") as fh:
    for k, (acc, gap) in enumerate(rows):
      fh.write(json.dumps(dict(split="mc", step=100 * (k + 1), epoch=16.0 * (k + 1), mc_accuracy=acc,
                               mc_accuracy_se=0.01, mc_nll_gap=gap, mc_nll_gap_se=0.02)) + "\n")


def test_task_curves_come_from_a_rerun_only_when_it_trained_the_same_run(tmp_path):
  """--task_runs: the study's best runs lack the task; a re-run of the same point that ends at the
  same validation loss supplies the curve, one that ends elsewhere is named and not used."""
  from analysis import report  # noqa: PLC0415
  study_dir, replica_dir = tmp_path / "study", tmp_path / "replica"
  for root, mdm_shift in ((study_dir, -0.5), (replica_dir, -0.4)):
    for e in (1, 64):
      make_run(root, objective="ar", n=1e6, u=1e6, epochs=e, name=f"ar-e{e}")
    make_run(root, objective="mdm", n=1e6, u=1e6, epochs=16, name="mdm-e16", loss_shift=mdm_shift)
  _mc_rows(replica_dir / "ar-e64", [(0.40, 0.30), (0.38, 0.25), (0.35, 0.2), (0.32, 0.12)])
  _mc_rows(replica_dir / "mdm-e16", [(0.30, 0.10), (0.33, 0.2)])
  out = tmp_path / "out"
  assert report.main([f"--runs={study_dir}", f"--task_runs={replica_dir}", f"--out={out}",
                      "--n_boot=0", "--no_plots"]) == 0
  task = json.loads((out / "fits.json").read_text())["task"]
  (r,) = task["runs"]
  assert r["run_name"] == "ar-e64" and len(r["points"]) == 4 and "identical" in r["source"]
  assert task["replica_not_the_same_run"] == ["mdm-e16"] and task["without_task"] == ["mdm-e16"]
  md = (out / "report.md").read_text()
  assert "from a re-run of the same point with eval.task_every > 0" in md
  assert "ended at another validation loss, so it is not used: mdm-e16" in md
  assert report.main([f"--runs={study_dir}", f"--task_runs={tmp_path / 'nope'}", f"--out={out}"]) == 2


def test_report_also_analyses_the_sweep_grid_beside_the_study(tmp_path):
  """--also: the learning-rate sweep lives in its own grid directory (or a committed report's
  tables); the study's report shows its section and its runs.csv holds both grids."""
  from analysis import report  # noqa: PLC0415
  study_dir, sweep_dir = tmp_path / "study", tmp_path / "sweep"
  for obj in ("ar", "mdm"):
    make_run(study_dir, objective=obj, n=1e5, u=1e6, epochs=1, name=f"claim-{obj}",
             config_extra={"optim.lr": 1e-3})
    for lr in (3e-4, 1e-3, 3e-3):
      make_run(sweep_dir, objective=obj, n=1e5, u=1e6, epochs=1, name=f"tune-{obj}-{lr:g}",
               loss_shift=0.1 * abs(np.log10(lr / 1e-3)),
               config_extra={"eval.set": collect.TUNING_SET, "optim.lr": lr})
  out, again = tmp_path / "out", tmp_path / "again"
  assert report.main([f"--runs={study_dir}", f"--also={sweep_dir}", f"--out={out}", "--n_boot=0",
                      "--no_plots"]) == 0
  runs = pd.read_csv(out / "runs.csv")
  assert len(runs) == 8 and (runs["eval_set"] == collect.TUNING_SET).sum() == 6
  md = (out / "report.md").read_text()
  assert "2 of 2 run directories finished" in md and f"Also analysed: 6 run(s) from {sweep_dir}" in md
  assert "| AR | m100K (U = 1M, E = 1) |" in md  # the sweep's section, from the other grid
  saved = tmp_path / "sweep_tables"  # a committed report's tables serve as well
  tables.write_tables(collect.collect(sweep_dir), saved)
  assert report.main([f"--runs={study_dir}", f"--also={saved}", f"--out={again}", "--n_boot=0",
                      "--no_plots"]) == 0
  assert pd.read_csv(again / "runs.csv")["run_name"].tolist() == runs["run_name"].tolist()
  again = tmp_path / "again2"  # the same grid twice is refused, before anything is written
  assert report.main([f"--runs={study_dir}", f"--also={out / 'nope'}", f"--out={again}"]) == 2
  assert report.main([f"--runs={study_dir}", f"--also={study_dir}", f"--out={again}"]) == 2
  assert not again.exists()
