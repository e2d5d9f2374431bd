"""Stacks (dlmscale/train/stack.py): runs of one compiled shape trained as one vmapped program.

Each member must be its solo run (same files, rows within 1e-5, same summary), a non-finite member
is frozen while the others finish, a SIGKILLed stack resumes every member to the uninterrupted
result, and launch.local --stack / launch.train_stack drive it."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from conftest import subprocess_env, tiny_config
from dlmscale import run_dir as rundir
from dlmscale.errors import TrainingDiverged
from dlmscale.train import loop, stack
from helpers.stack_grid import REPO, assert_rows_close, outcomes, train_stack, write_grid
from helpers.stack_grid import POINTS
from launch import grids as grid_lib
from launch import stacks

TIMING = ("wall_s", "tokens_per_s", "mfu", "phases", "startup_s", "startup_compile_s", "backend", "device_kind")


def _members(corpus, cache, objective="mdm", **overrides):
  """Configs of the test grid's points (helpers/stack_grid.py POINTS)."""
  out = []
  for p in POINTS:
    point = {k: v for k, v in p.items() if k != "run_name"}
    out.append(tiny_config(corpus, cache, objective, run_name=p["run_name"], **{**overrides, **point}))
  return out


def _files(workdir) -> list[str]:
  """The run directory's files (a TensorBoard event file's name holds its time and host)."""
  return sorted(str(p.relative_to(workdir)).split(".out.tfevents")[0] for p in workdir.rglob("*")
                if "checkpoints" not in p.parts)


def _assert_same_run(member, solo, resumed: bool = False) -> None:
  """`resumed`: `member` was stopped and resumed, so it may hold one TensorBoard file per attempt,
  a log of the saves a kill cut short and a stop's own checkpoint, as a solo run stopped alike would."""
  assert_rows_close(rundir.read_metrics(member), rundir.read_metrics(solo))
  a, b = rundir.read_summary(member), rundir.read_summary(solo)
  assert set(a) == set(b)
  for k, v in b.items():
    if k in TIMING or k == "data_dir":
      continue
    if isinstance(v, float):
      assert abs(a[k] - v) <= 1e-5 * max(abs(v), 1e-12), (k, a[k], v)
    else:
      assert a[k] == v, (k, a[k], v)
  if resumed:
    assert set(_files(member)) - {rundir.CHECKPOINT_ERRORS} == set(_files(solo))
  else:
    assert _files(member) == _files(solo)
  saved = lambda d: sorted(int(p.name) for p in rundir.checkpoints_dir(d).iterdir() if p.name.isdigit())
  if resumed:  # a stop's own save (SIGTERM) may be among the kept ones
    assert saved(member)[-1] == saved(solo)[-1]
  else:
    assert saved(member) == saved(solo)


def test_two_members_of_different_lengths_equal_their_solo_runs(tiny_corpus, data_cache, tmp_path):
  """The fast variant: another seed and lr, and half the epochs (so half the steps)."""
  configs = _members(tiny_corpus, data_cache, "ar", epochs=2.0)[1:]
  configs[1].epochs = 1.0
  got = stack.train_stack(configs, [tmp_path / c.run_name for c in configs])
  assert [o["state"] for o in got] == ["done"] * 2 and got[1]["total"] < got[0]["total"]
  for c in configs:
    loop.train_and_evaluate(c, tmp_path / f"solo-{c.run_name}")
    _assert_same_run(tmp_path / c.run_name, tmp_path / f"solo-{c.run_name}")


@pytest.mark.slow
def test_each_member_equals_its_solo_run(tiny_corpus, data_cache, tmp_path):
  """Three diffusion members (another seed and lr; fewer epochs, so fewer steps) in one stack."""
  configs = _members(tiny_corpus, data_cache)
  got = stack.train_stack(configs, [tmp_path / c.run_name for c in configs])
  assert [o["state"] for o in got] == ["done"] * 3 and [o["rc"] for o in got] == [0] * 3
  assert got[2]["total"] < got[0]["total"]  # the short member stopped updating while the others went on
  for c in configs:
    loop.train_and_evaluate(c, tmp_path / f"solo-{c.run_name}")
    _assert_same_run(tmp_path / c.run_name, tmp_path / f"solo-{c.run_name}")


def test_a_diverging_member_is_frozen_while_the_others_finish(tiny_corpus, data_cache, tmp_path):
  configs = _members(tiny_corpus, data_cache, "ar", epochs=1.0)[:2]
  configs[1].optim.lr = 1e12  # its loss goes non-finite within a few steps
  got = stack.train_stack(configs, [tmp_path / "ok", tmp_path / "nan"])
  assert got[0]["state"] == "done" and got[0]["rc"] == 0
  assert got[1]["state"] == "diverged" and got[1]["rc"] == 3 and "loss is" in got[1]["error"]
  assert rundir.is_finished(tmp_path / "ok") and not rundir.is_finished(tmp_path / "nan")
  with pytest.raises(TrainingDiverged) as solo:
    loop.train_and_evaluate(configs[1], tmp_path / "solo-nan")
  assert str(solo.value).replace("solo-nan", "nan") == got[1]["error"]
  assert_rows_close(rundir.read_metrics(tmp_path / "nan"), rundir.read_metrics(tmp_path / "solo-nan"))
  saved = lambda d: sorted(p.name for p in rundir.checkpoints_dir(d).iterdir())
  assert saved(tmp_path / "nan") == saved(tmp_path / "solo-nan")  # no checkpoint after the last good one


@pytest.mark.slow
def test_stack_command_exit_status_and_outcomes_for_a_diverged_member(tiny_corpus, data_cache, tmp_path):
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, "ar", epochs=1.0,
                    points=[{"run_name": "ok", "seed": 0}, {"run_name": "nan", "optim.lr": 1e12}])
  res = train_stack(spec, tmp_path / "runs", f"--result_json={tmp_path / 'out.json'}")
  assert res.returncode == 3, res.stderr[-2000:]
  assert "error:" in res.stderr and "Traceback" not in res.stderr
  got = outcomes(tmp_path / "out.json")
  assert got["ok"]["rc"] == 0 and got["nan"]["rc"] == 3


def test_grouping_by_compiled_shape(tiny_corpus, data_cache, tmp_path):
  points = [*POINTS, {"run_name": "wide", "model.d_model": 64}, {"run_name": "d", "seed": 3},
            {"run_name": "ar", "objective": "ar"}]
  grid = grid_lib.load_points(write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, points=points))
  assert stacks.groups(grid, list(grid.points), 3) == [["a", "b", "c"], ["d"], ["wide"], ["ar"]]
  assert stacks.groups(grid, list(grid.points), 8) == [["a", "b", "c", "d"], ["wide"], ["ar"]]


@pytest.mark.slow
def test_sigkill_and_sigterm_at_random_steps_resume_every_member_to_the_uninterrupted_stack(
    tiny_corpus, data_cache, tmp_path):
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache)
  straight = tmp_path / "straight"
  assert train_stack(spec, straight).returncode == 0
  killed = tmp_path / "killed"
  rng = random.Random()
  first = rng.randint(2, 7)
  for kind, step, rc in (("kill", first, -9), ("term", rng.randint(first + 1, 9), 0),
                         ("kill", rng.randint(10, 11), -9)):
    res = train_stack(spec, killed, DLMSCALE_FAULT=f"{kind}:{step}")
    assert res.returncode == rc, (kind, step, res.stdout[-2000:], res.stderr[-2000:])
    assert kind == "kill" or "stopped by signal" in res.stdout
  res = train_stack(spec, killed)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "resuming at step" in res.stdout
  for p in POINTS:
    _assert_same_run(killed / p["run_name"], straight / p["run_name"], resumed=True)


@pytest.mark.slow
def test_launch_local_stack_trains_each_point_into_its_own_run_directory(tiny_corpus, data_cache, tmp_path):
  """Four points of one shape in one stack; the diverging one fails (exit 3, its error line in its
  own launch log) while the others are done."""
  points = [*POINTS, {"run_name": "nan", "optim.lr": 1e12}]
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, points=points)
  cmd = [sys.executable, "-m", "launch.local", f"--config={spec}", f"--workdir={tmp_path / 'g'}",
         "--stack=8", "--noreport", "--poll_s=0.1"]
  res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
  assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
  manifest = json.loads((tmp_path / "g" / "grid_manifest.json").read_text())
  assert {n: r["state"] for n, r in manifest["runs"].items()} == {
      **{p["run_name"]: "done" for p in POINTS}, "nan": "failed"}
  assert manifest["runs"]["nan"]["returncode"] == 3
  for p in points:
    log = rundir.launch_log(tmp_path / "g" / p["run_name"]).read_text()
    assert "in a stack process" in log and ("error: loss is" in log) == (p["run_name"] == "nan")
    assert rundir.is_finished(tmp_path / "g" / p["run_name"]) == (p["run_name"] != "nan")
  assert "exit 3: error: loss is" in res.stdout


@pytest.mark.slow
def test_gpu_grid_script_runs_at_a_tiny_size(tmp_path):
  """bench/gpu_grid.sh for real on CPU at a tiny size, so it works the first time it meets a GPU."""
  out = tmp_path / "grid"
  env = subprocess_env(GPU_GRID_TINY="1", PYTHON=sys.executable)
  proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_grid.sh"), str(out)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + (out / "log.txt").read_text()[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  rows = summary["rows"]
  assert [(r["stack"], r["batch"]) for r in rows] == [(1, 4), (2, 4), (2, 8)]
  for r in rows:
    assert r["run_steps_per_s"] > 0 and r["start_to_first_step_s"] > 0 and r["mfu"] > 0 and r["loss_finite"]
  assert rows[1]["speedup_vs_solo"] > 0 and (out / "device.txt").read_text().strip()
