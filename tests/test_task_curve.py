"""The task curve: the built-in task scored during training (split "mc" rows), as the evaluator would."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from conftest import tiny_config
from dlmscale.eval import builtin_task
from dlmscale.commands import evaluate
from dlmscale import run_dir as rundir
from dlmscale.train import task_curve
from dlmscale.train import loop as train
from dlmscale.errors import UserError
from dlmscale.eval.choices import McItem

TIMING = ("wall_s", "tokens_per_s", "mfu")  # differ between two runs of the same config
ITEMS = 40


def _rows(workdir: pathlib.Path, split: str) -> list[dict]:
  return [r for r in rundir.read_metrics(workdir) if r["split"] == split]


def _untimed(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_nll_gap_is_other_choices_mean_nll_minus_true_nll():
  items = [McItem((1,), ((2,), (3,), (4,)), label=0), McItem((1,), ((2,), (3,)), label=1),
           McItem((1,), ((2,), (3,), (4,)), label=2)]
  scores = [np.array([-1.0, -3.0, -5.0]), np.array([-2.0, -0.5]), np.array([-1.0, -1.0, -4.0])]
  # NLL = -score. Item 0: mean(3, 5) - 1 = 3; item 1: 2 - 0.5 = 1.5; item 2: mean(1, 1) - 4 = -3.
  np.testing.assert_allclose(task_curve.nll_gaps(items, scores), [3.0, 1.5, -3.0])
  s = task_curve.summarise(items, scores)
  assert s["mc_nll_gap"] == pytest.approx(0.5)
  assert s["mc_nll_gap_se"] == pytest.approx(np.std([3.0, 1.5, -3.0], ddof=1) / np.sqrt(3))
  assert s["mc_accuracy"] == pytest.approx(2 / 3) and s["mc_items"] == 3


def test_due_every_nth_evaluation_and_the_last():
  evals = [4, 8, 12, 16, 18]  # every_steps = 4, total = 18
  assert [s for s in evals if task_curve.due(s, 4, 1, 18)] == evals
  assert [s for s in evals if task_curve.due(s, 4, 2, 18)] == [8, 16, 18]
  assert [s for s in evals if task_curve.due(s, 4, 0, 18)] == []


@pytest.mark.parametrize("bad", [-1, True])  # 1.5 or "2": refused when parsed (test_bad_inputs)
def test_bad_task_every_is_a_user_error(bad, tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache)
  with cfg.unlocked():
    cfg.eval.task_every = bad
  with pytest.raises(UserError, match="eval.task_every"):
    train.validate(cfg)


@pytest.fixture(scope="module")
def small_task():
  """40 items instead of 200: the same code path, a fifth of the scoring time."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(builtin_task, "DEFAULT_ITEMS", ITEMS)
    yield


@pytest.fixture(scope="module")
def mdm_run(small_task, tiny_corpus, data_cache, tmp_path_factory):
  """A finished diffusion run that scored the task at every evaluation (4, 8, 12 of 12 steps)."""
  cfg = tiny_config(tiny_corpus, data_cache, "mdm", **{"eval.task_every": 1})
  workdir = tmp_path_factory.mktemp("mdm_run")
  train.train_and_evaluate(cfg, workdir)
  return cfg, workdir


def test_mdm_rows_at_every_evaluation_match_the_evaluator(mdm_run):
  _, workdir = mdm_run
  evals, mc = _rows(workdir, "eval"), _rows(workdir, "mc")
  assert [r["step"] for r in mc] == [r["step"] for r in evals] == [4, 8, 12]
  for r, e in zip(mc, evals):
    assert r["epoch"] == e["epoch"] and r["tokens_seen"] == e["tokens_seen"]
    assert 0.0 <= r["mc_accuracy"] <= 1.0 and 0.0 < r["mc_accuracy_se"] < 0.5
    assert np.isfinite(r["mc_nll_gap"]) and 0.0 < r["mc_nll_gap_se"] < 10.0
    assert r["mc_items"] == ITEMS and r["mc_method"] == "elbo"
    # its companion file: per-item credit and NLL gap whose means are the row's numbers
    items = task_curve.load_item_scores(rundir.losses_path(workdir, r["step"], "mc"))
    assert items["credit_N"].shape == items["nll_gap_N"].shape == (ITEMS,)
    assert items["credit_N"].mean() == pytest.approx(r["mc_accuracy"], abs=1e-12)
    assert items["nll_gap_N"].mean() == pytest.approx(r["mc_nll_gap"], abs=1e-9)
    assert items["scores_NxC"].shape[0] == ITEMS
  # The final row is the number `python -m dlmscale.evaluate` gives the final checkpoint.
  out = evaluate.evaluate_run(workdir, mc_items=ITEMS)
  assert out["step"] == 12 and out["mc_accuracy"] == mc[-1]["mc_accuracy"]
  assert out["mc_accuracy_se"] == mc[-1]["mc_accuracy_se"] and out["mc_items"] == mc[-1]["mc_items"]


def test_resume_after_a_kill_neither_duplicates_nor_loses_mc_rows(mdm_run, tmp_path, capsys):
  """A kill after step 10 (rows up to step 8 written, newest checkpoint at step 6), then a resume."""
  cfg, straight = mdm_run
  broken = tmp_path / "broken"
  shutil.copytree(straight, broken)
  for step in ("9", "12"):
    shutil.rmtree(broken / "checkpoints" / step)
  (broken / "summary.json").unlink()
  with open(broken / "metrics.jsonl") as f:  # what a kill at step 10 leaves: nothing after step 9
    kept = [line for line in f if json.loads(line)["step"] <= 9]
  (broken / "metrics.jsonl").write_text("".join(kept))
  capsys.readouterr()
  train.train_and_evaluate(cfg, broken)
  assert "resuming at step 6" in capsys.readouterr().out
  assert _untimed(_rows(broken, "mc")) == _untimed(_rows(straight, "mc"))
  assert _untimed(_rows(broken, "eval")) == _untimed(_rows(straight, "eval"))


def test_off_by_default_and_the_task_changes_no_other_row(small_task, tiny_corpus, data_cache,
                                                          tmp_path):
  off, on = tmp_path / "off", tmp_path / "on"
  train.train_and_evaluate(tiny_config(tiny_corpus, data_cache, "ar"), off)
  train.train_and_evaluate(tiny_config(tiny_corpus, data_cache, "ar", **{"eval.task_every": 2}), on)
  assert {r["split"] for r in rundir.read_metrics(off)} == {"train", "eval"}
  assert [r["step"] for r in _rows(on, "mc")] == [8, 12]  # evaluations 4, 8, 12: every 2nd + last
  assert all(r["mc_method"] == "ar" for r in _rows(on, "mc"))
  for split in ("train", "eval"):
    assert _untimed(_rows(off, split)) == _untimed(_rows(on, split))
  assert json.loads((off / "summary.json").read_text())["final_eval_loss"] == \
      json.loads((on / "summary.json").read_text())["final_eval_loss"]
