"""WSD trunk and cooldown branches: a branch restored from its trunk's checkpoint is bitwise the
standalone WSD run of its length (params and every logged row of its span), and a killed trunk and
a killed branch each resume on their own. Log-spaced evaluation and the trunk/branch config checks."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from conftest import tiny_config
from dlmscale import run_dir as rundir
from dlmscale.errors import UserError
from dlmscale.train import cadence
from dlmscale.train import checkpoint
from dlmscale.train import loop as train
from dlmscale.train.config_checks import validate
from helpers.runs import final_params, run_main

WSD = {"optim.schedule": "wsd", "optim.decay_frac": 0.25}  # 12 steps: decay over the last 3
START = 9  # warmup 2 + stable 7


def _standalone(corpus, cache, **extra):
  return tiny_config(corpus, cache, "mdm", **WSD, **extra)


def _trunk(corpus, cache, **extra):
  return tiny_config(corpus, cache, "mdm", epochs=4.0, **{"optim.schedule": "constant",
                     "trunk.branch_steps": (START,), "checkpoint.keep": 1, **extra})


def _branch(corpus, cache, **extra):
  return _standalone(corpus, cache, **{"branch.trunk": "trunk", "branch.start_step": START, **extra})


def _span(workdir: pathlib.Path, after: int) -> list[tuple]:
  keys = ("step", "split", "loss", "grad_norm", "lr", "loss_se", "tokens_seen", "epoch", "flops")
  return [tuple(r.get(k) for k in keys) for r in rundir.read_metrics(workdir) if r["step"] > after]


def _assert_same_params(a: pathlib.Path, b: pathlib.Path) -> None:
  import jax
  for x, y in zip(jax.tree.leaves(final_params(a)), jax.tree.leaves(final_params(b)), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def standalone(tiny_corpus, data_cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("wsd") / "standalone"
  train.train_and_evaluate(_standalone(tiny_corpus, data_cache), workdir)
  return workdir


def test_branch_is_bitwise_the_standalone_wsd_run(tiny_corpus, data_cache, standalone, tmp_path):
  train.train_and_evaluate(_trunk(tiny_corpus, data_cache), tmp_path / "trunk")
  kept = checkpoint.saved_steps(rundir.checkpoints_dir(tmp_path / "trunk"))
  assert START in kept and kept[-1] == 16, kept  # keep=1 rotates, but a branch start is kept
  summary = train.train_and_evaluate(_branch(tiny_corpus, data_cache), tmp_path / "e3")
  assert summary["steps"] == 12
  _assert_same_params(tmp_path / "e3", standalone)
  span = _span(tmp_path / "e3", START)
  assert span and span == _span(standalone, START)
  assert min(r["step"] for r in rundir.read_metrics(tmp_path / "e3")) > START


def test_killed_trunk_and_branch_resume_on_their_own(tiny_corpus, data_cache, tmp_path):
  standalone = tmp_path / "standalone"  # as a subprocess too: its XLA settings are the trainer's
  assert run_main(_standalone(tiny_corpus, data_cache), standalone).returncode == 0
  trunk = _trunk(tiny_corpus, data_cache)
  branch = _branch(tiny_corpus, data_cache, **{"checkpoint.every_steps": 1})  # its own at 10, 11
  killed = run_main(trunk, tmp_path / "trunk", DLMSCALE_FAULT="kill:8")
  assert killed.returncode != 0 and not rundir.is_finished(tmp_path / "trunk")
  early = run_main(branch, tmp_path / "e3")  # the trunk has not reached the branch start
  assert early.returncode == 2 and f"no checkpoint at step {START}" in early.stderr, early.stderr
  assert run_main(trunk, tmp_path / "trunk").returncode == 0
  killed = run_main(branch, tmp_path / "e3", DLMSCALE_FAULT="kill:12")
  assert killed.returncode != 0 and not rundir.is_finished(tmp_path / "e3")
  again = run_main(branch, tmp_path / "e3")
  assert again.returncode == 0, again.stderr
  assert "resuming at step 1" in again.stdout, again.stdout  # from its own checkpoint (10 or 11)
  _assert_same_params(tmp_path / "e3", standalone)
  assert _span(tmp_path / "e3", START) == _span(standalone, START)


def test_log_spaced_evaluations_are_dense_early_and_end_at_the_last_step():
  steps = cadence.log_steps(1000, 8)
  assert steps[0] == 1 and steps[-1] == 1000 and len(steps) <= 8
  gaps = np.diff(steps)
  assert (np.diff(gaps) >= 0).all()
  assert cadence.log_steps(5, 16) == [1, 2, 3, 4, 5]


def test_log_schedule_evaluates_at_those_steps(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, **{"eval.schedule": "log", "eval.log_points": 4})
  train.train_and_evaluate(cfg, tmp_path / "run")
  evals = [r["step"] for r in rundir.read_metrics(tmp_path / "run") if r["split"] == "eval"]
  assert evals == cadence.log_steps(12, 4)


@pytest.mark.parametrize("overrides, needle", [
    ({"trunk.branch_steps": (9,)}, "optim.schedule must be 'constant'"),
    ({"trunk.branch_steps": (99,), "optim.schedule": "constant"}, "trunk.branch_steps must be whole steps"),
    ({"branch.start_step": 9}, "branch.trunk is empty"),
    ({"branch.trunk": "t", "branch.start_step": 9}, "optim.schedule must be 'wsd'"),
    ({**WSD, "branch.trunk": "t", "branch.start_step": 8}, "decay start, step 9 of 12"),
    ({**WSD, "branch.trunk": "t", "branch.start_step": 9, "optim.warmup_steps": 0},
     "optim.warmup_steps > 0"),
    ({"eval.schedule": "cosine"}, "eval.schedule must be"),
    ({"eval.log_points": 1}, "eval.log_points must be"),
])
def test_trunk_and_branch_config_checks(tiny_corpus, data_cache, overrides, needle):
  with pytest.raises(UserError, match=needle) as e:
    validate(tiny_config(tiny_corpus, data_cache, **overrides))
  assert "\n" not in str(e.value)
