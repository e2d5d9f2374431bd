"""Honest numbers in the analysis: paired errors, identifiability, intervals that word the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.findings import law_fits, paired
from analysis.laws import identify
from analysis.render import laws as laws_md
from dlmscale import run_dir
from dlmscale.data import evalset


def _record(loss_N, document_N):
  return dict(loss_N=np.asarray(loss_N, np.float64), document_N=np.asarray(document_N),
              chunk_N=np.arange(len(loss_N)))


def test_paired_difference_covers_the_truth_and_is_tighter_than_independent_ses():
  """Two runs share each document's difficulty (sd 1); run B is better by 0.05 plus chunk noise."""
  rng = np.random.default_rng(0)
  doc_N = np.repeat(np.arange(40), 4)
  hits, paired_se, indep_se = 0, [], []
  for _ in range(500):
    hard_N = rng.normal(0, 1.0, 40)[doc_N]
    a = _record(4.0 + hard_N + rng.normal(0, 0.1, doc_N.size), doc_N)
    b = _record(3.95 + hard_N + rng.normal(0, 0.1, doc_N.size), doc_N)
    d = paired.difference(a, b)
    hits += abs(d["diff"] - 0.05) <= 1.96 * d["se"]
    paired_se.append(d["se"])
    indep_se.append(np.hypot(evalset.clustered_se(a["loss_N"], doc_N), evalset.clustered_se(b["loss_N"], doc_N)))
  assert 0.9 <= hits / 500 <= 0.98
  assert np.median(paired_se) < 0.2 * np.median(indep_se)
  assert paired.verdict(0.05, float(np.median(paired_se))) == "positive"
  assert paired.verdict(0.05, float(np.median(indep_se))) == "inconclusive"


def test_paired_refuses_different_eval_sets_and_falls_back_to_independent():
  a = _record([1.0, 2.0, 3.0], [0, 1, 2])
  b = dict(_record([1.0, 2.0, 3.0], [0, 1, 2]), chunk_N=np.array([0, 1, 5]))
  assert paired.difference(a, b) is None
  se, kind = paired.diff_se(a, b, 0.3, 0.4)
  assert se == pytest.approx(0.5) and kind == paired.INDEPENDENT
  se, kind = paired.diff_se(a, a, 0.3, 0.4)
  assert kind == paired.PAIRED and se == 0.0


def test_identify_flags_bounds_tiny_e_and_zero_width_intervals():
  p = dict(a=2.0, e=np.log(1e-5), alpha=5.0, beta=0.3, rd=np.log(20.0), E=1e-5)
  r = identify.bound_reasons(p, ["alpha", "beta", "rd"], [1e-3, 1e-3, np.log(1e-2)], [5.0, 5.0, np.log(1e5)])
  assert r == ["alpha = 5 is on its upper bound"]
  assert identify.e_reason(p) and not identify.e_reason(dict(p, E=0.5))
  z = identify.zero_width_reasons({"a": (2.0, 2.0), "beta": (0.2, 0.4), "rn": (4.19, 4.19)}, ["a", "beta", "rn"])
  assert len(z) == 2 and "a has zero width" in z[0] and "R_N*" in z[1]
  assert identify.exponent_reasons(dict(alpha=-0.1, beta=0.3)) == ["alpha = -0.1 is not positive"]


def test_ratio_and_gap_sentences_follow_their_intervals():
  incon = laws_md.ratio_sentence(dict(value=1.75, ci=(0.81, 131.0), verdict="inconclusive"))
  assert "inconclusive" in incon and "longer" not in incon
  sure = laws_md.ratio_sentence(dict(value=16.0, ci=(5.0, 40.0), verdict="above 1"))
  assert "for longer than AR" in sure and "inconclusive" not in sure
  assert laws_md.ratio_sentence(dict(status="not available", reason="ar: not identifiable")) is None
  none = laws_md.ratio_sentence(dict(status="not available", reason="no MDM runs"))
  assert "not reported" in none and "=" not in none.split(":")[0]
  cross = dict(per_budget=[dict(unique_tokens=1e6, status="crosses", c_crit=1e12, loss_at_crossing=4.0,
                                c_range=(1e11, 1e13), gap_at_max=0.02, gap_se_at_max=0.05,
                                gap_se_kind=paired.PAIRED, gap_verdict="inconclusive")],
               c_crit_fit=None, reference=dict(coef_at_1e6=2.12e15, exponent=2.174))
  text = "\n".join(laws_md.crossover_section(cross))
  assert "inconclusive" in text and "C_crit =" not in text


def test_fits_section_renders_no_number_from_an_unidentifiable_fit():
  fits = dict(chinchilla={}, datacons=dict(
      ar=dict(status="not identifiable", reason="alpha = 5 is on its upper bound",
              degenerate_fit=dict(params=dict(R_D_star=5.12))),
      mdm=dict(status="not identifiable", reason="E = 8.7e-17 nats is below 0.001",
               degenerate_fit=dict(params=dict(R_D_star=8.96)))),
      R_D_star_ratio_mdm_over_ar=dict(status="not available", reason="ar: not identifiable"),
      datacons_target=dict(name="envelope", description=law_fits.TARGETS["envelope"]))
  md = "\n".join(laws_md.fits_section(fits))
  assert ("- data-constrained law: not identifiable for AR, MDM (AR: alpha = 5 is on its upper "
          "bound; MDM: E = 8.7e-17 nats is below 0.001). The data-constrained law needs") in md
  assert "5.12" not in md and "8.96" not in md and "1.75" not in md
  assert "R_D*(MDM) / R_D*(AR)" not in md and "epoch envelope" in md  # the law's line says why


def test_envelope_is_the_best_loss_within_e_epochs():
  pts = pd.DataFrame(dict(objective="ar", unique_tokens=1e6, model_size="s1",
                          epochs=[1.0, 4.0, 16.0, 64.0], loss=[5.0, 4.0, 4.5, 6.0],
                          best_loss=[5.0, 4.0, 3.9, 4.2], se=0.1, best_se=[0.1, 0.2, 0.3, 0.4]))
  env = law_fits.envelope(pts).sort_values("epochs")
  np.testing.assert_allclose(env["loss"], [5.0, 4.0, 3.9, 3.9])
  np.testing.assert_allclose(env["se"], [0.1, 0.2, 0.3, 0.3])


def test_family_bootstrap_streams_are_independent():
  from analysis.laws import bootstrap
  a, b = law_fits.family_seed(0, "ar"), law_fits.family_seed(0, "mdm")
  assert a != b and law_fits.family_seed(0, "ar") == a
  wa, wb = bootstrap.bootstrap_weights(20, 50, a), bootstrap.bootstrap_weights(20, 50, b)
  assert not np.array_equal(wa, wb)
  # independent draws: per-replicate weight vectors are uncorrelated on average
  corr = np.mean([np.corrcoef(wa[i], wb[i])[0, 1] for i in range(50)])
  assert abs(corr) < 0.1


@pytest.mark.slow
def test_sizes_spanning_2x_cannot_identify_alpha_and_no_ratio_is_rendered():
  """No size effect in the truth, three sizes over 2x: the joint fit's alpha is not identified."""
  rng = np.random.default_rng(2)
  rows = []
  for obj, rd in (("ar", 4.0), ("mdm", 50.0)):
    for n in (1e5, 1.4e5, 2e5):
      for u in (1e6, 3e6, 1e7):
        for e in (1, 4, 16, 64):
          deff = u * (1 + rd * (1 - np.exp(-(e - 1) / rd)))
          loss = 2.0 + 60 / deff ** 0.3 + rng.normal(0, 0.02)
          rows.append(dict(objective=obj, unique_tokens=u, model_size=f"m{n:g}", epochs=float(e), N=n,
                           D=u * e, C=6 * n * u * e, loss=loss, se=0.02, best_loss=loss, best_se=0.02))
  fits = law_fits.family_fits(pd.DataFrame(rows), n_boot=20, grid="coarse", target="final")
  assert fits["datacons"]["ar"]["status"] == "not identifiable"
  assert "alpha" in fits["datacons"]["ar"]["reason"]
  assert "value" not in fits["R_D_star_ratio_mdm_over_ar"]
  md = "\n".join(laws_md.fits_section(fits))
  assert "- data-constrained law: not identifiable for AR" in md  # one line says why, no ratio
  assert "R_D*(MDM) / R_D*(AR)" not in md and "R_D* =" not in md


def test_report_pairs_runs_that_saved_per_sequence_losses(tmp_path):
  """Fake runs with saved per-sequence losses: the epoch rise and within-run rise use paired SEs."""
  from analysis.findings import epochs, points
  from analysis.runs import collect
  from helpers.fakeruns import make_run
  rng = np.random.default_rng(0)
  doc_N = np.repeat(np.arange(20), 3)
  hard_N = rng.normal(0, 1.0, 20)[doc_N]
  es = evalset.EvalSet(chunk_ids_N=np.arange(60), document_N=doc_N, tokens_NxL=np.zeros((60, 2), np.int32))
  for e in (1, 8):  # bump: the 8-epoch run ends higher, so there is a rise to pair
    run = make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=e, bump=2.0 if e == 8 else 0.0)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in rows if r["split"] == "eval"):  # per-sequence losses averaging to the row's
      loss_N = 5.0 + hard_N + rng.normal(0, 0.05, 60)
      evalset.save_losses(run_dir.losses_path(run, r["step"]), loss_N - loss_N.mean() + r["loss"], es)
  c = collect.collect(tmp_path)
  pts = points.points(c.runs)
  records = points.point_records(c.runs, pts)
  assert len(records) == 2
  assert len(records.best) == 2
  ep = epochs.epoch_findings(pts, records)["per_size"][0]
  # the 8-epoch run is best mid-run (before the bump) and ends 2 nats higher: paired within the run
  key = tuple(pts.sort_values("epochs").iloc[-1][k] for k in points.POINT_KEYS)
  end, best = records[key], records.best[key]
  assert ep["best_epochs"] == 8 and ep["best_epoch"] < 8 and ep["rise_after"] > 1
  assert ep["rise_after_se_kind"] == paired.PAIRED
  assert ep["rise_after_se"] == pytest.approx(paired.difference(end, best)["se"])
  assert paired.difference(end, best)["se"] < 0.2 * np.hypot(
      evalset.clustered_se(end["loss_N"], doc_N), evalset.clustered_se(best["loss_N"], doc_N))
  within = epochs.within_run_overfitting(c.runs)
  assert within and all(w["rise_se_kind"] == paired.PAIRED for w in within)


def test_tables_round_trip_for_re_analysis_and_missing_tables_are_a_user_error(tmp_path):
  from analysis.runs import collect, tables
  from dlmscale.errors import UserError
  from helpers.fakeruns import make_run
  for e in (1, 4):
    make_run(tmp_path / "runs", objective="mdm", n=1e5, u=1e6, epochs=e)
  c = collect.collect(tmp_path / "runs")
  tables.write_tables(c, tmp_path / "out")
  back = tables.read_tables(tmp_path / "out")
  pd.testing.assert_frame_equal(back.runs[["run_name", "final_eval_loss", "epochs"]].reset_index(drop=True),
                                c.runs[["run_name", "final_eval_loss", "epochs"]].reset_index(drop=True))
  assert back.runs["finished"].all() and len(back.curves) == len(c.curves)
  with pytest.raises(UserError, match="runs.csv"):
    tables.read_tables(tmp_path / "runs")


def test_identify_flags_exponents_at_zero_or_unpinned_by_the_bootstrap():
  """The CPU study's MDM approach 3 printed alpha = 0.001 ± 7.7 as a finding."""
  assert identify.exponent_reasons(dict(alpha=9.3e-4, beta=0.29)) == [
      "alpha = 0.00093 is on its lower bound (0: its term is a constant)"]
  assert identify.exponent_reasons(dict(alpha=0.34, beta=0.29)) == []
  se_big = identify.spread_reason("alpha", 0.05, 0.36, (0.0, 1.3), (0.0, 2.0))
  assert se_big.startswith("the bootstrap SE of alpha (0.36) exceeds its value (0.05)")
  wide = identify.spread_reason("a_D", 0.15, 0.1, (0.139, 3.0), (1e-3, 3.0))
  assert "spans 95% of its range (0.001–3)" in wide
  assert identify.spread_reason("alpha", 0.34, 0.03, (0.29, 0.4), (0.0, 2.0)) is None
  boot = dict(se=dict(alpha=0.36, beta=0.1), ci=dict(alpha=(0.0, 1.3), beta=(0.06, 0.47)))
  assert len(identify.spread_reasons(dict(alpha=0.05, beta=0.29), boot,
                                     dict(alpha=(0.0, 2.0), beta=(0.0, 2.0)))) == 1
  twice = identify.zero_width_reasons({"rd": (np.log(1e4),) * 2, "R_D_star": (1e4, 1e4)},
                                      ["rd", "R_D_star"])
  assert len(twice) == 1 and "R_D*" in twice[0]


def _no_size_effect_points() -> pd.DataFrame:
  """Single-epoch points whose loss barely depends on N (alpha = 1e-3, as the CPU study's MDM)."""
  rng = np.random.default_rng(0)
  rows = []
  for n in (1e5, 2e5, 4e5, 1e6):
    for u in (12800.0, 51200.0, 204800.0):
      loss = 0.05 + 5.2 * n ** -1e-3 + 22.3 * u ** -0.29 + rng.normal(0, 0.02)
      rows.append(dict(objective="mdm", epochs=1.0, N=n, D=u, unique_tokens=u, C=6 * n * u,
                       loss=loss, se=0.02, best_loss=loss, best_se=0.02, model_size=f"m{n:g}"))
  return pd.DataFrame(rows)


def test_chinchilla_fit_with_an_unmeasured_exponent_is_not_a_finding():
  r = law_fits.chinchilla_family(_no_size_effect_points(), n_boot=20, seed=0, grid="coarse").result
  assert r["status"] == "not identifiable" and "alpha" in r["reason"], r.get("reason")
  md = "\n".join(laws_md.fits_section(dict(chinchilla=dict(mdm=r), datacons={})))
  (line,) = [l for l in md.splitlines() if l.startswith("- Chinchilla approach 3: ")]
  assert line.startswith("- Chinchilla approach 3: not identifiable for MDM (MDM: ")
  assert "compute-optimal" not in line and "±" not in line and "`configs/isoflop.py`" in line


def test_kaplan_exponent_spanning_its_box_is_not_identified_and_says_why():
  from analysis.laws import kaplan
  boot = dict(se=dict(a_D=0.9, D_c=1e8), ci=dict(a_D=(0.139, 3.0), D_c=(2e4, 1.4e9)))
  why = kaplan.spread_unidentified(dict(a_D=0.15, D_c=6.6e8, log_D_c=20.3), boot)
  assert set(why) == {"a_D", "D_c"}
  k = dict(status="ok", n_points=4, params=dict(a_D=0.15, D_c=6.6e8), unidentified=list(why),
           unidentified_why=why, bootstrap=boot)
  text = "\n".join(laws_md.kaplan_lines(dict(ar=dict(D=k))))
  assert "a_D not identified (the bootstrap SE of a_D (0.9) exceeds its value (0.15))" in text
  assert "D_c not identified (its exponent a_D is not identified)" in text and "6.6e+08" not in text
