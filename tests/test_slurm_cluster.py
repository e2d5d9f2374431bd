"""`launch.slurm` on a real single-node SLURM cluster (munged, slurmctld and slurmd on localhost,
brought up by tests/helpers/local_slurm.py, installed with apt-get when missing): the test-scale grid
submitted for real, a running task preempted with `scontrol requeue` that resumes from its checkpoint
to the same bits as an uninterrupted run, a storm of three requeues of one task, and a second
submission of a running grid that runs no point twice. What one node cannot show (multi-node
arguments, TPU) stays in the stand-in tests (test_launch_slurm.py, test_launch_tpu.py). Slow: a few
minutes on 2 cores."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from launch import grids as grid_lib
from dlmscale.train import checkpoint
from dlmscale import run_dir as rundir
from dlmscale.errors import UserError
from helpers import local_slurm

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
GRID = "configs/datacons.py:scale=test"
NAMES = list(grid_lib.load_points(GRID).points)
PREEMPTED = "ar-s0.1M-u20k-e1-seed0"
JOBS_TIMEOUT_S = 900.0
START = re.compile(r"task (\d+): (\S+) \(restart (\d+)\)")


def _free_port_pair() -> int:
  """A port P with P+1 also free (slurmctld and slurmd), so a cluster started by hand is untouched."""
  for _ in range(50):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    if port >= 65534:
      continue
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port + 1))
        return port
      except OSError:
        continue
  raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
  """The running cluster's client environment; stopped (by its daemons' pids) after the module."""
  if os.geteuid() != 0:
    pytest.skip("needs root: the local cluster runs slurmd and munged as root (SlurmUser=root)")
  try:
    local_slurm.ensure_installed(install=True)
  except UserError as e:
    pytest.skip(f"SLURM cannot be had here: {e}")
  root = tmp_path_factory.mktemp("slurm")
  t0 = time.monotonic()
  local_slurm.up(root, port=_free_port_pair())
  print(f"\nlocal SLURM up in {time.monotonic() - t0:.1f}s ({root})")
  yield local_slurm.client_env(root, {**os.environ, "PYTHONPATH": str(REPO)})
  t0 = time.monotonic()
  stopped = local_slurm.down(root)
  print(f"local SLURM down in {time.monotonic() - t0:.1f}s")
  assert stopped == ["slurmd", "slurmctld", "munged"]


def _submit(env: dict[str, str], workdir: pathlib.Path, *extra: str) -> tuple[str, str | None]:
  """`python -m launch.slurm` as a user runs it; returns (array job id, report job id or None)."""
  out = subprocess.run([sys.executable, "-m", "launch.slurm", f"--config={GRID}", f"--workdir={workdir}",
                        "--time=00:30:00", *extra], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
  assert out.returncode == 0, out.stderr
  array = re.search(r"submitted array job (\d+)", out.stdout).group(1)
  report = re.search(r"report job (\d+)", out.stdout)
  return array, report and report.group(1)


def _squeue(env: dict[str, str], jobs: list[str]) -> list[str]:
  """`JOBID STATE` of each of these jobs (array tasks one by one) that SLURM has not finished."""
  out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i %T"], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
  return out.stdout.split("\n")[:-1] if out.returncode == 0 else []


def _wait_jobs(env: dict[str, str], jobs: list[str], timeout_s: float = JOBS_TIMEOUT_S) -> None:
  deadline = time.monotonic() + timeout_s
  while live := _squeue(env, jobs):
    assert time.monotonic() < deadline, f"jobs still queued after {timeout_s:.0f}s: {live}"
    time.sleep(1.0)


def _wait_for(cond, what: str, timeout_s: float = 300.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not cond():
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.2)


def _job_records(env: dict[str, str], job: str) -> list[dict[str, str]]:
  """`scontrol show job` fields of every task of a job (kept for MinJobAge after it ended)."""
  out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=True)
  return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in out.stdout.splitlines()]


def _trainer_starts(workdir: pathlib.Path) -> list[tuple[str, int]]:
  """(run, restart count) for every task that took a point's lock and started its trainer."""
  logs = "".join(p.read_text() for p in sorted((workdir / ".slurm").glob("*_*.out")))
  return [(m.group(2), int(m.group(3))) for m in START.finditer(logs)]


def _manifest(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "grid_manifest.json").read_text())["runs"]


def _metrics_rows(run: pathlib.Path) -> list[tuple]:
  return [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(run)]


@pytest.fixture(scope="module")
def grid_run(cluster, tmp_path_factory) -> tuple[pathlib.Path, str, str]:
  """The whole test-scale grid, submitted once, with its report job; waited for."""
  workdir = tmp_path_factory.mktemp("grid")
  t0 = time.monotonic()
  array, report = _submit(cluster, workdir)
  assert report is not None
  _wait_jobs(cluster, [array, report])
  print(f"\ngrid of {len(NAMES)} points + report on the local cluster: {time.monotonic() - t0:.0f}s")
  return workdir, array, report


def test_grid_runs_every_point_once_and_writes_the_report(cluster, grid_run):
  workdir, array, report = grid_run
  tasks = _job_records(cluster, array)
  assert len(tasks) == len(NAMES)
  assert all(t["JobState"] == "COMPLETED" and t["ExitCode"] == "0:0" for t in tasks), tasks
  assert sorted(_trainer_starts(workdir)) == sorted((n, 0) for n in NAMES)  # each once, never restarted
  runs = _manifest(workdir)
  assert set(runs) == set(NAMES)
  for name in NAMES:
    assert (workdir / name / "summary.json").exists()
    assert runs[name]["state"] == "done" and runs[name]["attempts"] == 1 and runs[name]["returncode"] == 0
  [rep] = _job_records(cluster, report)
  assert rep["JobState"] == "COMPLETED" and rep["ExitCode"] == "0:0"
  report_md = workdir / "report" / "report.md"
  assert report_md.exists()
  assert f"({len(NAMES)} finished runs of {len(NAMES)})" in (workdir / ".slurm" / f"report-{report}.out").read_text()
  for link in re.findall(r"\]\(([^)]+)\)", report_md.read_text()):
    assert (report_md.parent / link).is_file(), f"report.md links {link}, which does not exist"


def test_requeued_task_resumes_from_its_checkpoint_bitwise(cluster, grid_run, tmp_path):
  reference = grid_run[0] / PREEMPTED
  workdir = tmp_path / "grid"
  # The real trainer, paused 0.3 s before each step so that the requeue lands mid-training.
  env = {**cluster, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "DLMSCALE_TEST_STEP_S": "0.3"}
  array, _ = _submit(env, workdir, f"--only={PREEMPTED}", "--noreport", "--trainer_module=slow_steps_trainer")
  run = workdir / PREEMPTED
  _wait_for(lambda: any(s >= 10 for s, split, _ in _metrics_rows(run) if split == "train")
            if (run / "metrics.jsonl").exists() else False, "the task to train 10 steps")
  subprocess.run(["scontrol", "requeue", f"{array}_0"], env=cluster, check=True, capture_output=True)
  _wait_jobs(cluster, [array])

  log = (workdir / ".slurm" / f"{array}_0.out").read_text()
  stopped = int(re.search(r"stopped by signal 15 at step (\d+)/", log).group(1))
  assert 10 <= stopped < 39
  assert f"resuming at step {stopped}" in log
  assert _trainer_starts(workdir) == [(PREEMPTED, 0), (PREEMPTED, 1)]
  [task] = _job_records(cluster, array)
  assert task["JobState"] == "COMPLETED" and task["Restarts"] == "1"
  entry = _manifest(workdir)[PREEMPTED]
  assert entry["state"] == "done" and entry["attempts"] == 2
  # Same rows, same final loss, same parameters as the run that was never interrupted.
  assert _metrics_rows(run) == _metrics_rows(reference)
  final = lambda d: json.loads((d / "summary.json").read_text())["final_eval_loss"]
  assert final(run) == final(reference)
  a = checkpoint.load_arrays(run / "checkpoints")["params"]
  b = checkpoint.load_arrays(reference / "checkpoints")["params"]
  assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b)) > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _requeue_when_running(env: dict[str, str], task: str, timeout_s: float = 120.0) -> None:
  """`scontrol requeue` on the task as soon as SLURM runs it again (a pending one cannot be)."""
  _wait_for(lambda: any(l.endswith(" RUNNING") for l in _squeue(env, [task])), f"{task} to run",
            timeout_s)
  subprocess.run(["scontrol", "requeue", task], env=env, check=True, capture_output=True)


def test_requeue_storm_runs_one_trainer_at_a_time_and_ends_bitwise(cluster, grid_run, tmp_path):
  reference = grid_run[0] / PREEMPTED
  workdir = tmp_path / "grid"
  env = {**cluster, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "DLMSCALE_TEST_STEP_S": "0.3"}
  array, _ = _submit(env, workdir, f"--only={PREEMPTED}", "--noreport", "--trainer_module=slow_steps_trainer")
  run = workdir / PREEMPTED
  _wait_for(lambda: any(s >= 5 for s, split, _ in _metrics_rows(run) if split == "train")
            if (run / "metrics.jsonl").exists() else False, "the task to train 5 steps")
  t0 = time.monotonic()
  for _ in range(3):  # each as soon as SLURM has started the task again: mid start-up, mid-save
    _requeue_when_running(cluster, f"{array}_0")
  storm_s = time.monotonic() - t0
  _wait_jobs(cluster, [array])
  [task] = _job_records(cluster, array)
  assert task["JobState"] == "COMPLETED" and task["Restarts"] == "3", (task, storm_s)
  starts = _trainer_starts(workdir)  # a requeue may land before a restart reaches its trainer
  assert starts[0] == (PREEMPTED, 0) and starts[-1] == (PREEMPTED, 3), starts
  assert [r for _, r in starts] == sorted({r for _, r in starts}), starts  # one trainer per restart
  assert _manifest(workdir)[PREEMPTED]["state"] == "done"
  assert _metrics_rows(run) == _metrics_rows(reference)
  a = checkpoint.load_arrays(run / "checkpoints")["params"]
  b = checkpoint.load_arrays(reference / "checkpoints")["params"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_second_submission_of_a_running_grid_runs_no_point_twice(cluster, tmp_path):
  workdir = tmp_path / "grid"
  first, _ = _submit(cluster, workdir, "--max_concurrent=1", "--noreport")  # leaves a CPU free
  _wait_for(lambda: bool(_trainer_starts(workdir)), "the first submission to start a point")
  second, _ = _submit(cluster, workdir, "--noreport")
  assert re.search(rf"^{first}_\d+ (RUNNING|PENDING)$", "\n".join(_squeue(cluster, [first])), re.M)
  _wait_jobs(cluster, [first, second])

  starts = _trainer_starts(workdir)
  assert sorted(starts) == sorted((n, 0) for n in NAMES), starts  # every point trained exactly once
  second_logs = "".join(p.read_text() for p in (workdir / ".slurm").glob(f"{second}_*.out"))
  assert "running elsewhere (its lock is held)" in second_logs  # it met the first's running task
  for job in (first, second):
    assert all(t["ExitCode"] == "0:0" for t in _job_records(cluster, job))
  runs = _manifest(workdir)
  for name in NAMES:
    assert runs[name]["state"] == "done" and runs[name]["attempts"] == 1
    steps = [s for s, split, _ in _metrics_rows(workdir / name) if split == "train"]
    assert steps == sorted(set(steps))  # one trainer wrote this run's rows
