"""The SLURM launcher: the --dry_run script and commands, and the generated array script executed
task by task with stand-ins for sbatch/srun/scontrol (finish, preempt + requeue + resume, skip a
finished or locked point, report a failure)."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from launch import grids as grid
from launch import slurm
from helpers.fake_trainer import REPO, TRAINER_MODULE, fake_env, ledger_events

GRID = "configs/datacons.py:scale=test"
NAMES = ["ar-s0.1M-u20k-e1-seed0", "mdm-s0.1M-u20k-e1-seed0", "ar-s0.1M-u20k-e2-seed0",
         "mdm-s0.1M-u20k-e2-seed0"]
# The script is named by the grid's hash (of every point's full config), so it moves with base.py.
HASH = grid.load_points(GRID).hash


def _trainer_args(workdir: pathlib.Path, name: str, epochs: str, every: int) -> str:
  obj = name.split("-")[0]
  return (f"--config={GRID} --workdir={workdir}/{name} --config.objective={obj} --config.model_size=s0.1M "
          f"--config.unique_tokens=20000 --config.epochs={epochs} --config.seed=0 --config.optim.lr=0.003 "
          f"--config.eval.every_steps={every} --config.run_name={name}")


def test_dry_run_prints_the_expected_script_and_commands(tmp_path, capsys):
  workdir = tmp_path / "grid"
  argv = [f"--config={GRID}", f"--workdir={workdir}", "--dry_run", "--partition=gpu", "--account=lab",
          "--time=04:00:00", "--nodes=2", "--gpus_per_node=4", "--max_concurrent=2",
          "--setup=module load cuda/12", "--sbatch_arg=--constraint=a100"]
  assert slurm.main(argv) == 0
  out = capsys.readouterr().out
  assert not workdir.exists()  # a dry run writes nothing
  script = f"{workdir}/.slurm/datacons-{HASH}.sbatch"
  header = [
      "#!/bin/bash", "#SBATCH --job-name=dlmscale-datacons", "#SBATCH --array=0-3%2", "#SBATCH --nodes=2",
      "#SBATCH --ntasks-per-node=1", "#SBATCH --time=04:00:00", "#SBATCH --gpus-per-node=4",
      "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --requeue", "#SBATCH --signal=TERM@300",
      "#SBATCH --open-mode=append", f"#SBATCH --output={workdir}/.slurm/%A_%a.out",
      "#SBATCH --constraint=a100"]
  lines = out.splitlines()
  assert lines[0] == f"# {script}" and lines[1:1 + len(header)] == header
  assert "module load cuda/12" in lines
  assert f"  0) RUN={NAMES[0]}; ARGS=({_trainer_args(workdir, NAMES[0], '1.0', 19)}) ;;" in lines
  assert f"  3) RUN={NAMES[3]}; ARGS=({_trainer_args(workdir, NAMES[3], '2.0', 39)}) ;;" in lines
  assert f'srun --kill-on-bad-exit=1 {sys.executable} -m dlmscale.main "${{ARGS[@]}}"' in lines
  assert '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; exit 0' in lines
  assert f"sbatch --parsable {script}" in lines
  assert lines[-1] == (
      f"sbatch --parsable --dependency=afterany:JOBID --job-name=dlmscale-report "
      f"--output={workdir}/.slurm/report-%j.out --time=01:00:00 --partition=gpu --account=lab "
      f"'--wrap=cd {REPO} && {sys.executable} -m analysis.report --runs={workdir} --out={workdir}/report'")


@pytest.fixture
def submitted(tmp_path, monkeypatch):
  """The grid 'submitted' through stand-in sbatch; returns (workdir, script path, env for tasks)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls.txt"
  for tool, body in {"sbatch": 'echo "4242;cluster"', "scontrol": "",
                     "srun": 'while [[ "$1" == --* ]]; do shift; done; exec "$@"'}.items():
    (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {calls}\n{body}\n')
    (bin_dir / tool).chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  workdir = tmp_path / "grid"
  assert slurm.main([f"--config={GRID}", f"--workdir={workdir}", f"--trainer_module={TRAINER_MODULE}",
                     "--noreport"]) == 0
  script = workdir / ".slurm" / f"datacons-{HASH}.sbatch"
  assert calls.read_text() == f"sbatch --parsable {script}\n"
  env = fake_env(tmp_path, PATH=os.environ["PATH"], SLURM_ARRAY_JOB_ID="4242", FAKE_STEPS="4", FAKE_STEP_S="0.02")
  return workdir, script, env, calls


def _task(script: pathlib.Path, env: dict, index: int, **extra: str) -> subprocess.Popen:
  return subprocess.Popen(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(index), **extra},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _state(workdir: pathlib.Path, name: str) -> str:
  return json.loads((workdir / "grid_manifest.json").read_text())["runs"][name]["state"]


def test_array_task_finishes_skips_and_fails(submitted):
  workdir, script, env, _ = submitted
  task = _task(script, env, 1)
  assert task.wait(timeout=60) == 0
  assert (workdir / NAMES[1] / "summary.json").exists() and _state(workdir, NAMES[1]) == "done"
  again = _task(script, env, 1)
  assert again.wait(timeout=60) == 0 and "already finished" in again.stdout.read()
  with open(workdir / ".locks" / f"{NAMES[2]}.lock", "w") as held:  # a local launcher is running it
    fcntl.flock(held, fcntl.LOCK_EX)
    busy = _task(script, env, 2)
    assert busy.wait(timeout=60) == 0 and "running elsewhere" in busy.stdout.read()
  failing = _task(script, {**env, "FAKE_FAIL": NAMES[3]}, 3)
  assert failing.wait(timeout=60) == 1 and _state(workdir, NAMES[3]) == "failed"
  starts = [e["run"] for e in ledger_events(pathlib.Path(env["FAKE_LEDGER"])) if e["event"] == "start"]
  assert starts == [NAMES[1]]  # the finished and the locked point were not started again


def test_array_task_preempted_requeues_itself_and_resumes(submitted):
  workdir, script, env, calls = submitted
  env = {**env, "FAKE_STEPS": "40", "FAKE_STEP_S": "0.05"}
  task = _task(script, env, 0)
  ledger = pathlib.Path(env["FAKE_LEDGER"])
  deadline = time.time() + 30
  while not any(e["event"] == "step" for e in ledger_events(ledger)):
    assert time.time() < deadline
    time.sleep(0.05)
  trainer = next(e["pid"] for e in ledger_events(ledger) if e["event"] == "start")
  os.kill(trainer, signal.SIGTERM)  # what --signal=TERM@300 does before the time limit
  assert task.wait(timeout=60) == 0
  assert "requeueing to resume" in task.stdout.read()
  assert calls.read_text().splitlines()[-1] == "scontrol requeue 4242_0"
  assert _state(workdir, NAMES[0]) == "preempted" and not (workdir / NAMES[0] / "summary.json").exists()
  restart = _task(script, {**env, "FAKE_STEP_S": "0.005"}, 0, SLURM_RESTART_COUNT="1")
  assert restart.wait(timeout=60) == 0 and _state(workdir, NAMES[0]) == "done"
  events = ledger_events(ledger)
  assert [e["step"] > 0 for e in events if e["event"] == "start"] == [False, True]
  assert sorted(e["step"] for e in events if e["event"] == "step") == list(range(1, 41))


def test_second_submission_of_another_grid_is_refused(submitted, capsys):
  workdir, _, _, calls = submitted
  before = (workdir / "grid_manifest.json").read_bytes()
  assert slurm.main(["--config=configs/isoflop.py:scale=test", f"--workdir={workdir}"]) == 2
  assert "was launched with another grid" in capsys.readouterr().err
  assert (workdir / "grid_manifest.json").read_bytes() == before and len(calls.read_text().splitlines()) == 1


def test_array_task_cancelled_by_slurm_does_not_requeue_itself(submitted):
  workdir, script, env, calls = submitted
  env = {**env, "FAKE_STEPS": "40", "FAKE_STEP_S": "0.05"}
  task = _task(script, env, 0)
  ledger = pathlib.Path(env["FAKE_LEDGER"])
  deadline = time.time() + 30
  while not any(e["event"] == "step" for e in ledger_events(ledger)):
    assert time.time() < deadline
    time.sleep(0.05)
  trainer = next(e["pid"] for e in ledger_events(ledger) if e["event"] == "start")
  os.kill(task.pid, signal.SIGTERM)  # scancel (and scontrol requeue) signal the batch shell too
  os.kill(trainer, signal.SIGTERM)
  assert task.wait(timeout=60) == 0
  assert "not requeueing it here" in task.stdout.read()
  assert not any(line.startswith("scontrol") for line in calls.read_text().splitlines())
  assert _state(workdir, NAMES[0]) == "preempted" and not (workdir / NAMES[0] / "summary.json").exists()
