"""The crossover frontier reads every evaluation along each run (stopping early is a way to spend
that compute), not only final losses: an AR that overfits late is judged by its best point."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from analysis.findings import critical, points
from analysis.render import laws as laws_md
from analysis.runs import collect
from dlmscale import run_dir
from dlmscale.data import evalset

U = 1e6
N = 1e6
DOC_N = np.repeat(np.arange(40), 2)
BASE_N = 4.0 + np.random.default_rng(0).normal(0, 1.0, 40)[DOC_N]  # shared sequence difficulty
ES = evalset.EvalSet(chunk_ids_N=np.arange(DOC_N.size), document_N=DOC_N,
                     tokens_NxL=np.zeros((DOC_N.size, 2), np.int32))


def _ar(c):
  return 4.0 - 0.3 * np.log10(c / 1e12)


def _write_run(root: pathlib.Path, name: str, objective: str, size: str, c_end: float, curve,
               seed: int = 0) -> None:
  """A finished run evaluated 8 times, at k/8 of c_end FLOPs, with per-sequence losses saved."""
  run = root / name
  run.mkdir()
  cfg = dict(objective=objective, model_size=size, unique_tokens=U, epochs=c_end / (6 * N * U),
             seed=seed, run_name=name)
  (run / "config.json").write_text(json.dumps(cfg))
  rng = np.random.default_rng(len(name) + seed)
  rows = []
  for k in range(1, 9):
    c = c_end * k / 8
    tokens = c / (6 * N)
    loss = float(curve(c))
    rows.append(dict(step=k * 10, split="eval", loss=loss, loss_se=0.1, tokens_seen=tokens,
                     epoch=tokens / U, flops=c, wall_s=float(k)))
    loss_N = BASE_N + rng.normal(0, 0.01, DOC_N.size)
    evalset.save_losses(run_dir.losses_path(run, k * 10), loss_N - loss_N.mean() + loss, ES)
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (run / "summary.json").write_text(json.dumps(dict(cfg, params_non_embedding=N, params_total=2 * N,
                                                    steps=80)))


def _grid(root: pathlib.Path, ar_rise, mdm_curve, mdm_stretch: float = 1.0) -> collect.Collected:
  """Three run lengths per family (1e13..1e15 FLOPs, MDM's x mdm_stretch); AR run i rises by
  ar_rise[i] past 40% of it."""
  for i, c_end in enumerate((1e13, 1e14, 1e15)):
    def ar(c, c_end=c_end, r=ar_rise[i]):
      return _ar(c) + r * max(0.0, c / c_end - 0.4) / 0.6
    _write_run(root, f"ar-s{i}", "ar", f"s{i}", c_end, ar)
    _write_run(root, f"mdm-s{i}", "mdm", f"s{i}", c_end * mdm_stretch, mdm_curve)
  return collect.collect(root)


def _both(c: collect.Collected) -> tuple[dict, dict]:
  finals = critical.findings(points.clean(points.points(c.runs)), points.point_records(c.runs, None),
                             n_boot=50, seed=0)
  along = points.curve_points(c.runs, c.curves)
  curve = critical.findings(along, points.curve_records(c.runs, along), n_boot=50, seed=0)
  return finals["per_budget"][0] | dict(out=finals), curve["per_budget"][0] | dict(out=curve)


def test_late_overfitting_ar_is_judged_by_its_best_point_along_the_run(tmp_path):
  # AR's two longer runs end 0.6 above their best; MDM sits 0.3 above AR's clean line throughout
  c = _grid(tmp_path, ar_rise=(0.0, 0.6, 0.6), mdm_curve=lambda x: _ar(x) + 0.3)
  finals, along = _both(c)
  assert finals["verdict"] == "crosses"  # what final losses alone would claim
  assert along["verdict"] == "no crossover" and along["status"] == "mdm_never_below"
  assert along["gap_at_max"] < -0.1 and along["gap_se_kind"].startswith("paired")
  assert along["gap_se_at_max"] < 0.01 and along["bound"] == pytest.approx(1e15)
  assert along["out"]["points"] == critical.ALONG and finals["out"]["points"] == critical.FINAL
  assert "documents" in along["out"]["uncertainty"] and "N(loss" not in along["out"]["uncertainty"]
  text = "\n".join(laws_md.crossover_section(along["out"]))
  assert "mid-schedule" in text and "upper bound" in text


def test_a_genuine_crossing_along_the_curves_is_still_found(tmp_path):
  # MDM falls 0.5 per decade against AR's 0.3: equal at 10^13.5 FLOPs; neither overfits. MDM's
  # runs are 1.2x longer, so its value at the top of the shared range (1e15) lies between two
  # evaluations: the gap there is still paired, over the same interpolation of their sequences
  c = _grid(tmp_path, ar_rise=(0.0, 0.0, 0.0), mdm_curve=lambda x: 4.3 - 0.5 * np.log10(x / 1e12),
            mdm_stretch=1.2)
  _, along = _both(c)
  assert along["verdict"] == "crosses" and along["gap_at_max"] == pytest.approx(0.3, abs=0.02)
  assert along["c_range"][1] == pytest.approx(1e15) and along["gap_se_kind"].startswith("paired")
  assert along["gap_se_at_max"] < 0.01
  assert along["c_crit"] == pytest.approx(10 ** 13.5, rel=0.05)
  assert along["frac_crossing"] == 1.0


def test_curve_points_average_seeds_per_step_and_key_each_step(tmp_path):
  _write_run(tmp_path, "ar-a", "ar", "s0", 1e13, _ar, seed=0)
  _write_run(tmp_path, "ar-b", "ar", "s0", 1e13, lambda x: _ar(x) + 0.1, seed=1)
  _write_run(tmp_path, "ar-noise", "ar", "s0", 1e13, _ar, seed=0)
  noisy = tmp_path / "ar-noise" / "config.json"
  noisy.write_text(json.dumps(dict(json.loads(noisy.read_text()), data={"label_noise": 0.2})))
  c = collect.collect(tmp_path)
  along = points.curve_points(c.runs, c.curves)
  assert len(along) == 8 and set(along["n_seeds"]) == {2}  # the label-noise run is left out
  top = along.sort_values("step").iloc[-1]
  assert top["loss"] == pytest.approx(_ar(1e13) + 0.05) and top["C"] == pytest.approx(1e13)
  assert top["C_6ND"] == pytest.approx(1e13) and top["step"] == 80.0
  recs = points.curve_records(c.runs, along)
  assert len(recs) == 8 and len({k[-1] for k in recs}) == 8
  assert recs[points.curve_key(top)]["loss_N"].mean() == pytest.approx(top["loss"])


def test_the_published_law_is_compared_in_its_own_flop_convention_with_e_crit_beside_it(tmp_path):
  # Prabhudesai et al. count N with the embedding (here params_total = 2 N): the comparison with
  # their C_crit uses that axis, the non-embedding one stands beside it, and so does the law's own
  # E_crit = C_crit / (6 N U) per size with the range it was fitted on.
  from analysis.render import answer
  c = _grid(tmp_path, ar_rise=(0.0, 0.6, 0.6), mdm_curve=lambda x: _ar(x) + 0.3)
  along = points.curve_points(c.runs, c.curves)
  out = critical.findings(along, points.curve_records(c.runs, along), n_boot=0, seed=0, runs=c.runs)
  b = out["per_budget"][0]
  assert b["flops"] == critical.PAPER_FLOPS and "with the embedding" in b["flops"]
  assert b["c_range_6nd"][1] == pytest.approx(2 * b["other_convention"]["c_range_6nd"][1])
  e_crit = critical.published_c_crit(U) / (6 * 2 * N * U)
  assert b["law_e_crit"] == {f"s{i}": pytest.approx(e_crit) for i in range(3)}
  assert out["reference"]["flops"] == critical.PAPER_FLOPS
  text = "\n".join(laws_md.crossover_section(out))
  line = next(ln for ln in text.splitlines() if "against the published law" in ln)
  assert "N with the embedding" in line and "E_crit = C_crit / (6 N U)" in line
  assert f"{e_crit:.3g}" in line and "without the embedding" in line and "25M-100M" in line
  sentence = answer._cross_sentence(b)
  assert "N with the embedding" in sentence and f"E_crit = C_crit / (6 N U) is {e_crit:.3g}" in sentence
