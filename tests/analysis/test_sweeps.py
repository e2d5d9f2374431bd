"""Double-descent verdicts, the token-order ablation and the config fields collect records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import report
from analysis.findings import doubledescent, paired, sweeps
from analysis.runs import collect
from dlmscale.model import sizes
from helpers.fakeruns import LAWS, make_run, save_eval_losses

WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192)


def test_detector_finds_a_peak_only_where_the_paired_errors_exclude_flatness():
  """A rise and fall of 0.05 per point: invisible behind independent SEs of 0.1 (sequence
  difficulty shared by both evaluations), clear once the difference is paired (SE 0.005)."""
  x = np.array([1.0, 2, 4, 8, 16, 32])
  peaked = np.array([5.0, 4.9, 4.95, 5.0, 4.9, 4.8])
  flat = np.array([5.0, 4.95, 4.9, 4.85, 4.8, 4.75])
  wide = np.full(6, 0.1)
  assert doubledescent.detect(x, peaked, wide) == []
  peaks = doubledescent.detect(x, peaked, wide, pair_se=lambda i, j: 0.005)
  assert [(p.x, p.x_before, p.x_after) for p in peaks] == [(8.0, 2.0, 32.0)]
  assert peaks[0].rise_z == pytest.approx(0.1 / 0.005) and peaks[0].fall_z == pytest.approx(0.2 / 0.005)
  assert doubledescent.detect(x, flat, wide, pair_se=lambda i, j: 0.005) == []
  overfit = np.array([5.0, 4.9, 4.8, 4.9, 5.0, 5.1])  # rises, never falls: not double descent
  assert doubledescent.detect(x, overfit, wide, pair_se=lambda i, j: 0.005) == []


def test_collect_records_the_sweep_knobs_and_names_custom_shapes(tmp_path):
  make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=4, name="plain")
  make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=4, name="knobs", config_extra={
      "data.label_noise": 0.2, "ar.num_orders": 4, "eval.set": collect.TUNING_SET,
      "eval.num_sequences": 64, "optim.lr": 1e-3, "optim.schedule": "constant",
      "model_size": "custom", "model.d_model": 48, "model.n_layers": 2})
  make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=4, name="ladder",
           config_extra={"model_size": "s0.4M"})
  runs = collect.collect(tmp_path).runs.set_index("run_name")
  k, p = runs.loc["knobs"], runs.loc["plain"]
  ladder = sizes.shape("s0.4M")  # config.model.* stay 0 for a ladder size; the table has its shape
  assert (runs.loc["ladder", "d_model"], runs.loc["ladder", "n_layers"]) == (ladder.d_model, ladder.n_layers)
  assert (k.label_noise, k.num_orders, k.eval_set, k.eval_num_sequences, k.lr, k.lr_schedule) == \
      (0.2, 4, "tune", 64, 1e-3, "constant")
  assert k.model_size == "custom-d48L2"
  assert (p.label_noise, p.num_orders, p.eval_set) == (0.0, 1, "validation")  # defaults of old runs
  assert set(collect.CONFIG_COLUMNS) <= set(collect.RUN_COLUMNS)



@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """A width sweep with a peak at d = 48 (noisy: larger), a clean sample-wise sweep, a
  constant-lr curve run with a bump at epoch 8, and the order ablation (N = 1, 4, 16 and MDM)."""
  root = tmp_path_factory.mktemp("sweeps")
  rng = np.random.default_rng(0)
  doc_N = np.repeat(np.arange(30), 2)
  hard_N = 5.0 + rng.normal(0, 1.0, 30)[doc_N]
  runs = []
  for noise, height in ((0.0, 0.05), (0.2, 0.15)):
    for i, w in enumerate(WIDTHS):
      n = 12 * w * w * 2
      size_term = LAWS["ar"]["A"] / n ** LAWS["ar"]["alpha"]  # cancelled: flat but for the bump
      shift = height * np.exp(-0.5 * (i - 3) ** 2) - size_term  # peak at the 4th width, 48
      runs.append(make_run(root, objective="ar", n=n, u=1e5, epochs=64,
                           name=f"ar-d{w}L2-n{noise:g}", loss_shift=shift, noise=0.001,
                           config_extra={"model_size": "custom", "model.d_model": w,
                                         "model.n_layers": 2, "data.label_noise": noise}))
  for u in (2.5e4, 3.2e4, 4e4, 5e4):
    runs.append(make_run(root, objective="mdm", n=4e5, u=u, epochs=64, name=f"mdm-u{u:g}"))
  runs.append(make_run(root, objective="ar", n=4e5, u=1e5, epochs=32, n_eval=16, bump=0.3,
                       name="ar-curve", config_extra={"optim.schedule": "constant"}))
  for n_orders in (1, 4, 16):
    runs.append(make_run(root, objective="ar", n=4e5, u=2e5, epochs=16, n_eval=6,
                         name=f"ar-o{n_orders}", loss_shift=-0.02 * np.log2(n_orders),
                         config_extra={"ar.num_orders": n_orders}))
  runs.append(make_run(root, objective="mdm", n=4e5, u=2e5, epochs=16, n_eval=6, name="mdm-ref"))
  for run in runs:
    save_eval_losses(run, hard_N, doc_N, rng, noise=0.02)
  assert report.main([f"--runs={root}", f"--out={root / 'out'}", "--n_boot=0", "--grid=coarse",
                      "--no_plots"]) == 0
  out = root / "out"
  return out, json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()


def test_width_sweep_peak_is_marked_with_paired_errors(swept):
  _, fits, md = swept
  model = {s["label_noise"]: s for s in fits["double_descent"]["series"]
           if s["axis"] == "model" and s.get("width_only")}
  assert set(model) == {0.0, 0.2}
  for s in model.values():
    assert s["se_kind"] == paired.PAIRED and len(s["x"]) == len(WIDTHS)
    assert s["verdict"] == "peak" and s["peaks"][0]["x"] == pytest.approx(12 * 48 * 48 * 2)
  assert model[0.2]["peaks"][0]["rise"] > model[0.0]["peaks"][0]["rise"]
  assert "| Model-wise | AR | U = 100k, E = 64 (widths at one depth), label noise 0.2 | 8 | paired | peak at N = 5.53e+04" in md


def test_sample_wise_and_curve_series_get_their_verdicts(swept):
  out, fits, md = swept
  series = fits["double_descent"]["series"]
  sample = [s for s in series if s["axis"] == "sample" and s["objective"] == "mdm"]
  assert len(sample) == 1 and sample[0]["verdict"] == sweeps.NO_PEAK and len(sample[0]["x"]) == 4
  curve = [s for s in series if s["axis"] == "curve"]
  assert [s["run_name"] for s in curve] == ["ar-curve"]
  assert curve[0]["verdict"] == "peak" and 6 <= curve[0]["peaks"][0]["x"] <= 10
  assert curve[0]["se_kind"] == paired.PAIRED
  assert "| Sample-wise | MDM | m400K, E = 64 | 4 | paired | no peak beyond errors |" in md
  assert "*Figure dd_curve not drawn: figures were not drawn (--no_plots).*" in md


def test_sweep_figures_are_drawn_and_linked(swept, tmp_path):
  from analysis.render import markdown, plots_sweeps
  _, fits, _ = swept
  figures = plots_sweeps.all_figures(fits, tmp_path)
  assert sorted(figures) == ["dd_curve", "dd_model", "dd_sample", "orders"]
  for name in figures:
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
  md = markdown.render(dict(fits, figures=figures, figures_not_drawn={}))
  assert all(f"](figures/{name}.png)" in md for name in figures)


def test_noisy_and_order_runs_stay_out_of_the_main_claims(swept):
  out, fits, _ = swept
  pts = __import__("pandas").read_csv(out / "points.csv")
  assert set(pts["label_noise"]) == {0.0} and set(pts["num_orders"]) == {1}


def test_order_ablation_compares_each_n_with_plain_ar_paired(swept):
  _, fits, md = swept
  (g,) = fits["orders"]
  assert (g["model_size"], g["unique_tokens"], g["epochs"]) == ("m400K", 2e5, 16)
  by = {(r["objective"], r["num_orders"]): r for r in g["runs"]}
  assert set(by) == {("ar", 1), ("ar", 4), ("ar", 16), ("mdm", 1)}
  assert "vs_plain" not in by[("ar", 1)] and len(by[("ar", 4)]["epoch"]) == 6
  n16 = by[("ar", 16)]
  assert n16["vs_plain"] == pytest.approx(-0.08, abs=0.01) and n16["vs_plain_se_kind"] == paired.PAIRED
  assert n16["vs_plain_verdict"] == "negative"
  assert f"| AR, N = 16 (seed 0) |" in md and "(lower) |" in md
