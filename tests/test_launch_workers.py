"""launch.local with long-lived workers (launch/worker.py): the launcher tests of
tests/test_launch_local.py again, with the fake trainer run in-process by a worker per slot (kills,
two launchers, failures, stops during start-up), plus the checks that only workers need: points
really share a process, and a run trained in a worker is bitwise the run trained alone."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import test_launch_local as tll
from launch import grids as grid_lib
from conftest import subprocess_env
from launch import worker
from test_launch_fakes import REPO, TESTS, _fake_main, ledger_events

# Workers import this module for run_point: JAX and orbax are imported by the one test that needs them.

POINT_FN = "test_launch_workers:run_point"


def run_point(request: dict) -> int:
  """The fake trainer of test_launch_fakes.py, in the worker's process."""
  argv = [f"--config={request['spec']}", f"--workdir={request['workdir']}",
          *grid_lib.override_flags(request["overrides"])]
  rc = _fake_main(argv)
  if rc == 0 and not (pathlib.Path(request["workdir"]) / "summary.json").exists():
    raise worker.Stopped(0)  # the fake swallowed a SIGTERM: this worker stops, as the real one does
  return rc


@pytest.fixture
def workers(monkeypatch):
  """Every launcher the tests in test_launch_local.py start runs its points in workers."""
  plain = tll._env
  monkeypatch.setattr(tll, "_env", lambda tmp_path, **extra: {**plain(tmp_path, **extra),
                                                               "DLMSCALE_POINT_FN": POINT_FN})


@pytest.mark.parametrize("kill", ["sigterm", "sigkill_launcher", "sigkill_everything"])
def test_killed_midway_then_rerun_completes_every_run_exactly_once(workers, tmp_path, kill):
  tll.test_killed_midway_then_rerun_completes_every_run_exactly_once(tmp_path, kill)


def test_stop_during_startup_is_resumable_not_failed(workers, tmp_path):
  tll.test_stop_during_trainer_startup_is_resumable_not_failed(tmp_path)


def test_two_launchers_split_the_work(workers, tmp_path):
  tll.test_two_launchers_on_one_directory_split_the_work(tmp_path)


def test_failed_point_reported_and_others_finish(workers, tmp_path):
  tll.test_failed_run_reported_with_log_and_others_finish(tmp_path)


def test_points_share_one_process_per_slot(workers, tmp_path):
  workdir = tmp_path / "grid"
  proc = tll._launch(workdir, tll._env(tmp_path, FAKE_STEPS="2", FAKE_STEP_S="0.01"), "--parallel=2")
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == 0, out
  starts = [e for e in ledger_events(tmp_path / "ledger.jsonl") if e["event"] == "start"]
  assert len(starts) == 4 and len({e["pid"] for e in starts}) == 2  # 4 points, 2 processes
  assert os.getpid() not in {e["pid"] for e in starts}
  assert "in a worker process" in (workdir / tll.NAMES[0] / "launch.log").read_text()
  # No worker outlives its launcher.
  for pid in {e["pid"] for e in starts}:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_noworkers_runs_one_process_per_point(workers, tmp_path):
  proc = tll._launch(tmp_path / "grid", tll._env(tmp_path, FAKE_STEPS="1", FAKE_STEP_S="0.01",
                                                 DLMSCALE_TRAINER_MODULE="test_launch_fakes"),
                     "--parallel=1", "--noworkers")
  assert proc.wait(timeout=60) == 0
  starts = [e for e in ledger_events(tmp_path / "ledger.jsonl") if e["event"] == "start"]
  assert len({e["pid"] for e in starts}) == 4


# --- the real trainer: a worker's run is the run trained alone, bit for bit ---------------------

GRID_FILE = """
from configs import grid
from conftest import tiny_config

def get_config(arg=None):
  return tiny_config({corpus!r}, {cache!r})

def sweep(arg=None):
  return [{{"objective": "ar", "run_name": "ar-s0"}},
          {{"objective": "mdm", "run_name": "mdm-s0"}},
          {{"objective": "ar", "seed": 1, "epochs": 2.0, "run_name": "ar-s1-e2"}}]
"""


def _arrays(rundir_: pathlib.Path) -> list:
  import jax  # noqa: PLC0415
  from dlmscale.train import checkpoint  # noqa: PLC0415
  return jax.tree.leaves(checkpoint.load_arrays(rundir_ / "checkpoints"))


def _rows(rundir_: pathlib.Path) -> list[tuple]:
  from dlmscale import run_dir as rundir  # noqa: PLC0415
  return [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(rundir_)]


@pytest.mark.slow
def test_worker_runs_are_bitwise_the_runs_trained_alone(tmp_path, tiny_corpus, data_cache):
  grid_file = tmp_path / "tinygrid.py"
  grid_file.write_text(GRID_FILE.format(corpus=tiny_corpus, cache=data_cache))
  env = subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
  env.pop("DLMSCALE_TRAINER_MODULE", None)
  env.pop("DLMSCALE_POINT_FN", None)
  launch = [sys.executable, "-m", "launch.local", f"--config={grid_file}", "--parallel=1", "--noreport",
            "--poll_s=0.05"]
  # Every point's worker is killed at step 5 (SIGKILL); the re-run resumes all three in one worker.
  workdir = tmp_path / "grid"
  killed = subprocess.run([*launch, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                          env={**env, "DLMSCALE_FAULT": "kill:5"}, timeout=600)
  assert killed.returncode == 1 and "killed by SIGKILL" in killed.stdout, killed.stdout + killed.stderr
  done = subprocess.run([*launch, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                        env=env, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  log = (workdir / "ar-s0" / "launch.log").read_text()
  assert "resuming at step" in log and "in a worker process" in log
  grid = grid_lib.load_points(str(grid_file))
  alone = tmp_path / "alone"
  for name in grid.points:  # each point as `python -m dlmscale.main` would train it, in its own process
    r = subprocess.run([sys.executable, "-m", "dlmscale.main", *grid.trainer_args(name, alone)], cwd=REPO,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _rows(workdir / name) == _rows(alone / name), name
    for a, b in zip(_arrays(workdir / name), _arrays(alone / name), strict=True):
      assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
    same = json.loads((workdir / name / "config.json").read_text())
    assert same == json.loads((alone / name / "config.json").read_text())
