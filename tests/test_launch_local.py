"""The local launcher against a fake trainer (tests/helpers/fake_trainer.py): a 4-point micro grid is
killed mid-way and re-run, two launchers share one directory, failures are reported (each of these
with a trainer process per point and with workers, tests/helpers/launch_grid.py), bad input is
refused without touching the grid directory. One slow test runs the real trainer."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from launch import cpus, local
from helpers.fake_trainer import REPO, TRAINER_MODULE, ledger_events
from helpers.launch_grid import (GRID, MODES, NAMES, assert_each_run_completed_once, by_run, launcher_env,
                                 start_launcher, wait_until)


@pytest.fixture(params=MODES)
def mode(request) -> str:
  """The launcher scenarios run twice: a trainer process per point, and points in long-lived workers."""
  return request.param


@pytest.mark.parametrize("kill", ["sigterm", "sigkill_launcher", "sigkill_everything"])
def test_killed_midway_then_rerun_completes_every_run_exactly_once(tmp_path, kill, mode):
  env = launcher_env(tmp_path, mode, FAKE_STEPS="10", FAKE_STEP_S="0.08")
  workdir = tmp_path / "grid"
  first = start_launcher(workdir, env, "--parallel=2")
  ledger = tmp_path / "ledger.jsonl"

  def third_run_stepping() -> bool:
    ev = ledger_events(ledger)
    started = [e["run"] for e in ev if e["event"] == "start"]
    return len(started) >= 3 and any(e["event"] == "step" and e["run"] == started[2] for e in ev)
  wait_until(third_run_stepping)
  orphans = [e["pid"] for e in ledger_events(ledger) if e["event"] == "start"
             and not (workdir / e["run"] / "summary.json").exists()]
  first.send_signal(signal.SIGTERM if kill == "sigterm" else signal.SIGKILL)
  if kill == "sigkill_everything":  # a crash: the trainers die too, mid-step, with no checkpoint call
    for pid in orphans:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
  out1 = first.communicate(timeout=60)[0]
  if kill == "sigterm":
    assert first.returncode == 128 + signal.SIGTERM and "run the same command again to resume" in out1
    stopped = [e["run"] for e in ledger_events(ledger) if e["event"] == "preempted"]
    assert stopped and not any((workdir / n / "summary.json").exists() for n in stopped)
    assert "FAILED" not in out1, out1  # a run that checkpointed on the signal stopped; it did not fail
    assert not any("Traceback" in (workdir / n / "launch.log").read_text() for n in stopped)
  assert sum((workdir / n / "summary.json").exists() for n in NAMES) < 4  # really mid-way

  second = start_launcher(workdir, env, "--parallel=2")
  out2 = second.communicate(timeout=120)[0]
  assert second.returncode == 0, out2
  events = assert_each_run_completed_once(tmp_path, workdir, steps=10)
  starts = [e for e in events if e["event"] == "start"]
  if kill != "sigkill_launcher":  # the interrupted points resumed from their checkpoints
    assert any(e["step"] > 0 for e in starts)
  else:  # the orphaned trainers kept their locks and finished; nobody started them again
    assert all(by_run(events, "start")[n] == 1 for n in NAMES)
  report = json.loads((workdir / "report" / "report.json").read_text())
  assert report["done"] == sorted(NAMES)
  # Threads: two runs share the cores evenly, each pinned to its own.
  k = len(cpus.usable_cpus()) // 2
  assert {e["omp"] for e in starts} == {str(k)}
  assert all(e["xla"] == f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={k}" for e in starts)
  assert all(len(e["cpus"]) == k for e in starts) and not set(starts[0]["cpus"]) & set(starts[1]["cpus"])
  assert "done          4" in out2 and "ETA" in out2


def test_stop_during_trainer_startup_is_resumable_not_failed(tmp_path, mode):
  """A trainer SIGTERMed before it installs its handler dies of the signal: still only stopped."""
  workdir = tmp_path / "grid"
  proc = start_launcher(workdir, launcher_env(tmp_path, mode, FAKE_STARTUP_S="30"), "--parallel=2")
  wait_until(lambda: len(ledger_events(tmp_path / "ledger.jsonl")) >= 2)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == 128 + signal.SIGTERM and "FAILED" not in out
  states = {p["state"] for p in json.loads((workdir / "grid_manifest.json").read_text())["runs"].values()}
  assert states == {"preempted", "pending"}
  again = start_launcher(workdir, launcher_env(tmp_path, mode, FAKE_STEPS="2", FAKE_STEP_S="0.01"), "--parallel=2")
  assert again.wait(timeout=60) == 0
  assert by_run(ledger_events(tmp_path / "ledger.jsonl"), "finished") == {n: 1 for n in NAMES}


def test_two_launchers_on_one_directory_split_the_work(tmp_path, mode):
  env = launcher_env(tmp_path, mode, FAKE_STEPS="8", FAKE_STEP_S="0.1")
  workdir = tmp_path / "grid"
  a, b = start_launcher(workdir, env, "--parallel=1"), start_launcher(workdir, env, "--parallel=1")
  out_a, out_b = a.communicate(timeout=120)[0], b.communicate(timeout=120)[0]
  assert a.returncode == 0 and b.returncode == 0, out_a + out_b
  events = assert_each_run_completed_once(tmp_path, workdir, steps=8)
  assert all(by_run(events, "start")[n] == 1 for n in NAMES)
  manifest = json.loads((workdir / "grid_manifest.json").read_text())
  assert len({p["launcher"] for p in manifest["runs"].values()}) == 2  # both did some of it


def test_failed_run_reported_with_log_and_others_finish(tmp_path, mode):
  bad = "ar-s0.1M-u20k-e2-seed0"
  workdir = tmp_path / "grid"
  proc = start_launcher(workdir, launcher_env(tmp_path, mode, FAKE_STEPS="3", FAKE_STEP_S="0.02", FAKE_FAIL=bad),
                        "--parallel=2")
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == 1
  log = workdir / bad / "launch.log"
  assert f"{bad}: exit 1: RuntimeError: fake failure of {bad} (log: {log})" in out
  assert "fake failure" in log.read_text()
  assert sorted(p.parent.name for p in workdir.glob("*/summary.json")) == sorted(set(NAMES) - {bad})
  manifest = json.loads((workdir / "grid_manifest.json").read_text())
  assert manifest["runs"][bad]["state"] == "failed" and manifest["runs"][bad]["returncode"] == 1
  # Fixed: the same command retries the failed point only.
  proc = start_launcher(workdir, launcher_env(tmp_path, mode, FAKE_STEPS="3", FAKE_STEP_S="0.02"), "--parallel=2")
  assert proc.wait(timeout=60) == 0
  assert by_run(ledger_events(tmp_path / "ledger.jsonl"), "finished") == {n: 1 for n in NAMES}


def _snapshot(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_grid(tmp_path, monkeypatch) -> pathlib.Path:
  """A grid directory whose 4 points finished (in-process launcher, fake trainer)."""
  for k, v in launcher_env(tmp_path, FAKE_STEPS="1", FAKE_STEP_S="0.01").items():
    monkeypatch.setenv(k, v)
  workdir = tmp_path / "grid"
  assert local.main([f"--config={GRID}", f"--workdir={workdir}", "--parallel=2", "--poll_s=0.02",
                     "--noreport", f"--trainer_module={TRAINER_MODULE}"]) == 0
  return workdir


def test_workdir_of_another_grid_is_refused_and_untouched(finished_grid, capsys):
  before = _snapshot(finished_grid)
  capsys.readouterr()
  assert local.main(["--config=configs/isoflop.py:scale=test", f"--workdir={finished_grid}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "was launched with another grid" in err and "new --workdir" in err
  assert local.main([f"--config={GRID}", f"--workdir={finished_grid}", "--set", "eval.mc_samples=3"]) == 2
  assert "change their config" in capsys.readouterr().err
  assert _snapshot(finished_grid) == before  # nothing lost, nothing even rewritten


def test_extend_adds_points_and_keeps_finished_runs(finished_grid, tmp_path, capsys):
  grid2 = f"{GRID},seeds=0+1"
  assert local.main([f"--config={grid2}", f"--workdir={finished_grid}", "--noreport"]) == 2
  assert "--extend" in capsys.readouterr().err
  assert local.main([f"--config={grid2}", f"--workdir={finished_grid}", "--extend", "--parallel=2",
                     "--poll_s=0.02", "--noreport", f"--trainer_module={TRAINER_MODULE}"]) == 0
  manifest = json.loads((finished_grid / "grid_manifest.json").read_text())
  assert len(manifest["runs"]) == 8 and all(p["state"] == "done" for p in manifest["runs"].values())
  starts = by_run(ledger_events(tmp_path / "ledger.jsonl"), "start")
  assert all(starts[n] == 1 for n in NAMES)  # the seed-0 runs were not run again


def test_grid_file_without_sweep_is_refused(tmp_path, capsys):
  bad = tmp_path / "onepoint.py"
  bad.write_text("from configs import base\n\ndef get_config(arg=None):\n  return base.get_config()\n")
  workdir = tmp_path / "grid"
  assert local.main([f"--config={bad}", f"--workdir={workdir}"]) == 2
  err = capsys.readouterr().err
  assert "onepoint.py defines no sweep(arg), so it is not a grid config" in err and not workdir.exists()


def test_parallel_beyond_the_cores_is_refused(tmp_path, capsys):
  n = len(cpus.usable_cpus())
  workdir = tmp_path / "grid"
  assert local.main([f"--config={GRID}", f"--workdir={workdir}", f"--parallel={n + 1}"]) == 2
  err = capsys.readouterr().err
  assert f"--parallel={n + 1} asks for more concurrent runs" in err and f"--parallel={n} or less" in err
  assert not workdir.exists()
  assert cpus.check_parallel(n, n) == 1 and cpus.check_parallel(1, n) == n


def test_unknown_set_key_is_refused(tmp_path, capsys):
  assert local.main([f"--config={GRID}", f"--workdir={tmp_path / 'g'}", "--set", "optim.lrr=1e-3"]) == 2
  assert "'optim.lrr': no such config key" in capsys.readouterr().err


def test_dry_run_prints_commands_and_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / "grid"
  assert local.main([f"--config={GRID}", f"--workdir={workdir}", "--dry_run"]) == 0
  lines = [l for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
  assert len(lines) == 4 and not workdir.exists()
  assert lines[1] == (
      f"pending   python -m dlmscale.main --config={GRID} --workdir={workdir}/mdm-s0.1M-u20k-e1-seed0 "
      "--config.objective=mdm --config.model_size=s0.1M --config.unique_tokens=20000 --config.epochs=1.0 "
      "--config.seed=0 --config.optim.lr=0.003 --config.eval.every_steps=19 "
      "--config.run_name=mdm-s0.1M-u20k-e1-seed0")


def test_thread_env_splits_cores():
  assert cpus.thread_env(4, parallel=1) == {}  # a lone run keeps every core
  env = cpus.thread_env(3, parallel=2, base_xla_flags="--xla_dump_to=/tmp/x")
  assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=3"
  assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
  assert cpus.slot_cpus([0, 1, 2, 3, 4, 5], slot=1, threads=3) == [3, 4, 5]


@pytest.mark.slow
def test_real_trainer_two_point_micro_grid(tmp_path, tiny_corpus, data_cache):
  """Two real runs (AR and MDM, s0.1M, 20k unique tokens, 1 epoch) through the real trainer."""
  workdir = tmp_path / "grid"
  env = dict(os.environ, PYTHONPATH=str(REPO))
  env.pop("DLMSCALE_TRAINER_MODULE", None)
  cmd = [sys.executable, "-m", "launch.local", f"--config={GRID},epochs=1", f"--workdir={workdir}",
         "--parallel=2", "--noreport", "--set", f"data.corpus={tiny_corpus}", "--set", f"data.cache_dir={data_cache}"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout + out.stderr
  for obj in ("ar", "mdm"):
    summary = json.loads((workdir / f"{obj}-s0.1M-u20k-e1-seed0" / "summary.json").read_text())
    assert summary["objective"] == obj and summary["model_size"] == "s0.1M"
  # A re-run finds both finished and starts nothing.
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and "start" not in again.stdout.replace("started", "")
