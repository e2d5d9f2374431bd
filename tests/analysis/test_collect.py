"""collect.py on fabricated run directories in the trainer's format."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from analysis.runs import collect, tables
from dlmscale.errors import UserError
from helpers.fakeruns import EVAL_SE, make_grid, make_run


def test_collects_every_run_and_its_curve(tmp_path):
  names = make_grid(tmp_path, sizes=(1e5, 1e6), budgets=(1e6,), epochs=(1, 4),
                    unfinished=("mdm_m1000K_U1e+06_E4_s0",))
  got = collect.collect(tmp_path)
  runs = got.runs.set_index("run_name")
  assert sorted(runs.index) == sorted(names)
  assert list(got.runs.columns) == collect.RUN_COLUMNS
  done = runs.loc["ar_m1000K_U1e+06_E4_s0"]
  summary = json.loads((tmp_path / "ar_m1000K_U1e+06_E4_s0" / "summary.json").read_text())
  assert done["finished"] and done["objective"] == "ar" and done["epochs"] == 4
  for col in ("params_total", "params_non_embedding", "tokens_seen", "flops", "final_eval_loss",
              "best_eval_loss", "best_step", "best_epoch", "unique_tokens"):
    assert done[col] == pytest.approx(summary[col]), col
  partial = runs.loc["mdm_m1000K_U1e+06_E4_s0"]
  assert not partial["finished"] and partial["n_eval"] == 4
  assert partial["tokens_seen"] < 2.1e6  # stopped halfway through 4e6 tokens
  # curves: long format, one row per metrics line, tagged with the run's grid coordinates
  c = got.curves[got.curves["run_name"] == "ar_m1000K_U1e+06_E4_s0"]
  assert set(c["split"]) == {"train", "eval"} and (c["split"] == "eval").sum() == 4
  assert (c["unique_tokens"] == 1e6).all() and (c["epochs_planned"] == 4).all()
  assert c.loc[c["split"] == "eval", "loss_se"].eq(EVAL_SE).all()


def test_missing_summary_keys_are_derived_from_metrics(tmp_path):
  run = make_run(tmp_path, objective="mdm", n=1e6, u=1e6, epochs=8, mc_accuracy=0.41,
                 drop_summary_keys=("final_eval_loss", "best_eval_loss", "best_step", "best_epoch",
                                    "tokens_seen", "unique_tokens"))
  with (run / "metrics.jsonl").open("a") as fh:
    fh.write('{"step": 99999, "split": "eval", "loss": \n')  # a half-written last line
  got = collect.collect(tmp_path)
  row = got.runs.iloc[0]
  rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()[:-1]]
  evals = [r for r in rows if r["split"] == "eval"]
  best = min(evals, key=lambda r: r["loss"])
  assert row["final_eval_loss"] == pytest.approx(evals[-1]["loss"])
  assert row["best_eval_loss"] == pytest.approx(best["loss"])
  assert row["best_step"] == best["step"] and row["best_epoch"] == pytest.approx(best["epoch"])
  assert row["unique_tokens"] == 1e6  # from config.json
  assert row["tokens_seen"] == pytest.approx(rows[-1]["tokens_seen"])
  assert row["mc_accuracy"] == pytest.approx(0.41)
  assert any("malformed" in p for p in got.problems)


def test_tables_written_as_csv_and_parquet(tmp_path):
  make_grid(tmp_path / "runs", sizes=(1e5,), budgets=(1e6,), epochs=(1, 2))
  got = collect.collect(tmp_path / "runs")
  paths = tables.write_tables(got, tmp_path / "out")
  assert {p.name for p in paths} == {"runs.csv", "runs.parquet", "curves.csv", "curves.parquet"}
  back = pd.read_parquet(tmp_path / "out" / "runs.parquet")
  assert len(back) == 4
  np.testing.assert_allclose(back["final_eval_loss"], got.runs["final_eval_loss"])
  curves = pd.read_csv(tmp_path / "out" / "curves.csv")
  assert len(curves) == len(got.curves)


def test_manifest_comparison_lists_missing_and_partial_runs(tmp_path):
  make_grid(tmp_path, sizes=(1e5,), budgets=(1e6,), epochs=(1, 2), objectives=("ar",),
            unfinished=("ar_m100K_U1e+06_E2_s0",))
  manifest = {"runs": [{"run_name": "ar_m100K_U1e+06_E1_s0", "state": "done"},
                       {"run_name": "ar_m100K_U1e+06_E2_s0", "state": "running"},
                       {"run_name": "ar_m100K_U1e+06_E4_s0", "state": "pending"}]}
  (tmp_path / "grid_manifest.json").write_text(json.dumps(manifest))
  got = collect.collect(tmp_path)
  status = tables.manifest_status(tmp_path, got.runs)
  assert (status["n_finished"], status["n_partial"], status["n_missing"]) == (1, 1, 1)
  found = {r["run_name"]: r["found"] for r in status["rows"]}
  assert found["ar_m100K_U1e+06_E4_s0"] == "missing"


def test_no_finished_run_and_missing_directory_are_user_errors(tmp_path):
  make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=2, finished=False)
  got = collect.collect(tmp_path)
  with pytest.raises(UserError, match="no finished run"):
    collect.require_finished(got, tmp_path)
  with pytest.raises(UserError, match="does not exist"):
    collect.collect(tmp_path / "nope")


def test_runs_started_by_hand_join_curves_to_runs(tmp_path):
  """run_name "" (a hand-started dlmscale.main run) and a name shared by two directories: each run
  gets one name, the same in the runs and the curves tables, so analyses joining them keep it."""
  for sub in ("a", "b"):
    run = make_run(tmp_path / sub, objective="ar", n=1e5, u=1e6, epochs=2, name="hand")
    for f in ("config.json", "summary.json"):
      d = json.loads((run / f).read_text())
      d["run_name"] = ""
      (run / f).write_text(json.dumps(d))
  make_run(tmp_path / "a", objective="mdm", n=1e5, u=1e6, epochs=2, name="twin")
  make_run(tmp_path / "b", objective="mdm", n=1e5, u=1e6, epochs=2, name="twin")
  got = collect.collect(tmp_path)
  assert sorted(got.runs["run_name"]) == ["hand@a/hand", "hand@b/hand", "twin@a/twin", "twin@b/twin"]
  assert set(got.curves["run_name"]) == set(got.runs["run_name"])
  joined = got.curves.merge(got.runs[["run_name", "run_dir"]], on="run_name", how="left")
  assert joined["run_dir"].notna().all()
  per_run = got.curves.groupby("run_name").size()
  for r in got.runs.itertuples():
    n_lines = len((pathlib.Path(r.run_dir) / "metrics.jsonl").read_text().splitlines())
    assert per_run[r.run_name] == n_lines


def test_manifest_written_by_launch_manifest_is_read(tmp_path, capsys):
  """The real manifest shape: {"runs": {name: {"state", "in_grid", ...}}}, here with the mdm points of
  an earlier launch kept as in_grid False after an --extend launch of the ar points alone."""
  from configs import datacons
  from launch import manifest as launch_manifest
  assert launch_manifest.main([f"--workdir={tmp_path}", "--init=configs/datacons.py:scale=test"]) == 0
  assert launch_manifest.main([f"--workdir={tmp_path}", "--init=configs/datacons.py:scale=test,objectives=ar",
                               "--extend"]) == 0
  ar = [p["run_name"] for p in datacons.sweep("scale=test,objectives=ar")]
  mdm = [p["run_name"] for p in datacons.sweep("scale=test,objectives=mdm")]
  written = json.loads((tmp_path / "grid_manifest.json").read_text())["runs"]
  assert {n: e["in_grid"] for n, e in written.items()} == {**{n: True for n in ar}, **{n: False for n in mdm}}
  make_run(tmp_path, objective="ar", n=1e5, u=2e4, epochs=1, name=ar[0])
  make_run(tmp_path, objective="ar", n=1e5, u=2e4, epochs=2, name=ar[1], finished=False)
  assert launch_manifest.main([f"--workdir={tmp_path}", f"--mark={ar[0]}=done"]) == 0
  capsys.readouterr()
  status = tables.manifest_status(tmp_path, collect.collect(tmp_path).runs)
  rows = {r["run_name"]: (r["manifest_state"], r["found"]) for r in status["rows"]}
  assert rows[ar[0]] == ("done", "finished") and rows[ar[1]] == ("pending", "partial")
  assert all(rows[n] == ("pending", "missing") for n in mdm)  # still points of this directory
  assert (status["expected"], status["n_finished"], status["n_partial"], status["n_missing"]) == (
      len(ar) + len(mdm), 1, 1, len(mdm))
  assert status["not_in_manifest"] == []
