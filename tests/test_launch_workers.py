"""launch.local with long-lived workers (launch/worker.py), the checks that only workers need:
points really share a process, --noworkers goes back to a process per point, and a run trained in a
worker is bitwise the run trained alone. (The launcher scenarios of tests/test_launch_local.py, kills,
two launchers, failures, stops during start-up, run there with workers too: its `mode` fixture.)"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import subprocess_env
from helpers.fake_trainer import REPO, TESTS, TRAINER_MODULE, ledger_events
from helpers.launch_grid import NAMES, launcher_env, start_launcher
from launch import grids as grid_lib

# The workers import helpers.fake_trainer for run_point: JAX and orbax are imported by the one test
# that needs them.


def test_points_share_one_process_per_slot(tmp_path):
  workdir = tmp_path / "grid"
  proc = start_launcher(workdir, launcher_env(tmp_path, "workers", FAKE_STEPS="2", FAKE_STEP_S="0.01"),
                        "--parallel=2")
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == 0, out
  starts = [e for e in ledger_events(tmp_path / "ledger.jsonl") if e["event"] == "start"]
  assert len(starts) == 4 and len({e["pid"] for e in starts}) == 2  # 4 points, 2 processes
  assert os.getpid() not in {e["pid"] for e in starts}
  assert "in a worker process" in (workdir / NAMES[0] / "launch.log").read_text()
  # No worker outlives its launcher.
  for pid in {e["pid"] for e in starts}:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_noworkers_runs_one_process_per_point(tmp_path):
  proc = start_launcher(tmp_path / "grid", launcher_env(tmp_path, "workers", FAKE_STEPS="1", FAKE_STEP_S="0.01",
                                                        DLMSCALE_TRAINER_MODULE=TRAINER_MODULE),
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
  # Every point's worker is killed before step 7 (SIGKILL); the re-run resumes all three in one worker.
  # Checkpoints come every 3 steps and orbax starts a save only once the one before it is complete,
  # so when step 6's save has begun, step 3's is a finished checkpoint: the resume is certain, not a
  # race with the async save (kills inside a save are tests/test_faults.py's).
  workdir = tmp_path / "grid"
  killed = subprocess.run([*launch, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                          env={**env, "DLMSCALE_FAULT": "kill:7"}, timeout=600)
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
