"""WSD trunks and cooldown branches trained in stacks (launch/stacks.py, dlmscale/train/stack.py).

Trunks stack with trunks, branches with branches: a stacked trunk is its solo run (rows within
1e-5, the same kept checkpoints, its branch starts among them), a stacked branch is its solo branch
and the standalone WSD run of its length, `launch.local --stack` trains the trunks' stack before the
branches' (each branch only once its trunk's checkpoint exists) to the unstacked grid's results, and
a SIGKILLed stack of branches resumes every member to the same result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types

import pytest

from conftest import subprocess_env, tiny_config
from dlmscale import run_dir as rundir
from dlmscale.train import checkpoint, loop, optim, stack
from helpers.stack_grid import REPO, assert_rows_close, assert_same_run, train_stack, write_grid
from launch import grids as grid_lib
from launch import stacks

WSD = {"optim.schedule": "wsd", "optim.decay_frac": 0.25}
TRUNK = {"optim.schedule": "constant", "checkpoint.keep": 1, "branch.trunk": "", "branch.start_step": 0}
BRANCH = {**WSD, "trunk.branch_steps": (), "checkpoint.every_steps": 1}  # a branch saves its own steps
# Two trunks (another seed, lr and length; each keeps its own branch starts) and three branches:
# two from t0 starting at different steps, one from t1. tiny_config: 4 steps per epoch, warmup 2.
# Learning rates below tiny_config's 1e-2: at a constant 1e-2 the loss spikes near step 16, where
# float-level differences between the vmapped and the solo step grow past the 1e-5 compared.
TRUNKS = [{"run_name": "t0", "seed": 0, "optim.lr": 3e-3, "epochs": 4.0, "trunk.branch_steps": (6, 9),
           **TRUNK},
          {"run_name": "t1", "seed": 1, "optim.lr": 2e-3, "epochs": 3.0, "trunk.branch_steps": (6,), **TRUNK}]
BRANCHES = [{"run_name": "b0", "seed": 0, "optim.lr": 3e-3, "epochs": 3.0, "branch.trunk": "t0",
             "branch.start_step": 9, **BRANCH},
            {"run_name": "b1", "seed": 1, "optim.lr": 2e-3, "epochs": 2.0, "branch.trunk": "t1",
             "branch.start_step": 6, **BRANCH},
            {"run_name": "b2", "seed": 0, "optim.lr": 3e-3, "epochs": 2.0, "branch.trunk": "t0",
             "branch.start_step": 6, **BRANCH}]
NAMES = [p["run_name"] for p in TRUNKS + BRANCHES]


def _config(corpus, cache, point: dict):
  return tiny_config(corpus, cache, "ar", **point)


def _saved(workdir) -> list[int]:
  return checkpoint.saved_steps(rundir.checkpoints_dir(workdir))


def test_branch_starts_are_each_branchs_wsd_decay_start(tiny_corpus, data_cache):
  for p in BRANCHES:
    c = _config(tiny_corpus, data_cache, p)
    assert optim.wsd_decay_start(c.optim, round(c.epochs * 4)) == p["branch.start_step"]


def test_trunks_and_branches_get_keys_of_their_own_and_branches_stack_last(tiny_corpus, data_cache, tmp_path):
  points = [*BRANCHES, *TRUNKS, {"run_name": "plain", "seed": 3, **TRUNK, "trunk.branch_steps": ()}]
  grid = grid_lib.load_points(write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, "ar", points=points))
  assert stacks.groups(grid, list(grid.points), 8) == [["t0", "t1"], ["plain"], ["b0", "b1", "b2"]]
  assert stacks.groups(grid, list(grid.points), 2) == [["t0", "t1"], ["plain"], ["b0", "b1"], ["b2"]]
  assert len({stacks.key(grid, n) for n in ("t0", "b0", "plain")}) == 3


def test_a_branch_joins_a_stack_only_once_its_trunks_checkpoint_exists(tiny_corpus, data_cache, tmp_path):
  grid = grid_lib.load_points(write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, "ar",
                                         points=TRUNKS + BRANCHES))
  workdir = tmp_path / "runs"
  (rundir.checkpoints_dir(workdir / "t0") / "6").mkdir(parents=True)  # t0 passed step 6, not 9
  launcher = types.SimpleNamespace(grid=grid, workdir=workdir, todo=["t1", "b0", "b1"],  # b2 starts
                                   args=types.SimpleNamespace(stack=8))
  lock = types.SimpleNamespace(release=lambda: None)
  mates = lambda: [n for n, _ in stacks.mates(launcher, "b2", lambda w, n: lock, lambda w, n: False)]
  assert mates() == [] and launcher.todo == ["t1", "b0", "b1"]
  (rundir.checkpoints_dir(workdir / "t1") / "6").mkdir(parents=True)
  assert mates() == ["b1"] and launcher.todo == ["t1", "b0"]


def test_the_stack_command_leaves_out_a_branch_whose_trunk_has_not_saved_its_start(
    tiny_corpus, data_cache, tmp_path):
  from launch import train_stack as command  # noqa: PLC0415 - imports JAX
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, "ar", points=TRUNKS + BRANCHES)
  out = tmp_path / "out.json"
  assert command.main([f"--config={spec}", f"--workdir={tmp_path / 'runs'}", "--only=b1",
                       f"--result_json={out}"]) == 2
  got = json.loads(out.read_text())["b1"]
  assert got["state"] == "waiting" and got["rc"] == 2
  assert "its trunk t1 has no checkpoint at step 6" in got["error"]
  assert not (tmp_path / "runs" / "b1").exists()


@pytest.fixture(scope="module")
def trunks(tiny_corpus, data_cache, tmp_path_factory):
  """The two trunks stacked (in stacked/) and solo (in solo/), in this process."""
  root = tmp_path_factory.mktemp("trunks")
  configs = [_config(tiny_corpus, data_cache, p) for p in TRUNKS]
  got = stack.train_stack(configs, [root / "stacked" / c.run_name for c in configs])
  assert [o["state"] for o in got] == ["done", "done"], got
  for c in configs:
    loop.train_and_evaluate(c, root / "solo" / c.run_name)
  return root


def test_a_stack_of_trunks_equals_the_solo_trunks(trunks):
  for p in TRUNKS:
    assert_same_run(trunks / "stacked" / p["run_name"], trunks / "solo" / p["run_name"])
  assert _saved(trunks / "stacked" / "t0") == [6, 9, 16]  # keep=1, and each branch start
  assert _saved(trunks / "stacked" / "t1") == [6, 12]


def test_a_stack_of_branches_equals_the_solo_branches_and_the_standalone_wsd_run(
    trunks, tiny_corpus, data_cache, tmp_path):
  configs = [_config(tiny_corpus, data_cache, p) for p in BRANCHES]
  got = stack.train_stack(configs, [trunks / "stacked" / c.run_name for c in configs])
  assert [o["state"] for o in got] == ["done"] * 3, got
  for c in configs:
    loop.train_and_evaluate(c, trunks / "solo" / c.run_name)
    assert_same_run(trunks / "stacked" / c.run_name, trunks / "solo" / c.run_name)
    rows = rundir.read_metrics(trunks / "stacked" / c.run_name)
    assert min(r["step"] for r in rows) == c.branch.start_step + 1  # from its own trunk's checkpoint
  b0 = BRANCHES[0]
  standalone = {k: v for k, v in b0.items() if not k.startswith("branch.")}
  loop.train_and_evaluate(_config(tiny_corpus, data_cache, standalone), tmp_path / "standalone")
  span = lambda d: [r for r in rundir.read_metrics(d) if r["step"] > b0["branch.start_step"]]
  assert_rows_close(span(trunks / "stacked" / "b0"), span(tmp_path / "standalone"))
  final = lambda d: rundir.read_summary(d)["final_eval_loss"]
  a, b = final(trunks / "stacked" / "b0"), final(tmp_path / "standalone")
  assert abs(a - b) <= 1e-5 * abs(b)


def _launch(spec: str, workdir, *extra: str) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "launch.local", f"--config={spec}", f"--workdir={workdir}", "--parallel=1",
         "--noreport", "--poll_s=0.1", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def launched(tiny_corpus, data_cache, tmp_path_factory):
  """The trunk-and-branch grid by launch.local, with --stack=4 (in stacked/) and without (in solo/)."""
  root = tmp_path_factory.mktemp("launched")
  spec = write_grid(root / "grid.py", tiny_corpus, data_cache, "ar", points=TRUNKS + BRANCHES)
  for name, extra in (("stacked", ["--stack=4"]), ("solo", [])):
    res = _launch(spec, root / name, *extra)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return root, spec


@pytest.mark.slow
def test_launch_local_stacks_trunks_then_branches_to_the_unstacked_grids_results(launched):
  root, _ = launched
  grid = root / "stacked"
  manifest = json.loads((grid / "grid_manifest.json").read_text())
  assert {n: r["state"] for n, r in manifest["runs"].items()} == {n: "done" for n in NAMES}
  stacked = {p.stem: sorted(json.loads(p.read_text())) for p in (grid / stacks.STACK_LOGS).glob("*.json")}
  assert stacked == {"t0": ["t0", "t1"], "b0": ["b0", "b1", "b2"]}  # one stack each, never mixed
  log = (grid / stacks.STACK_LOGS / "b0.log").read_text()
  for p in BRANCHES:
    assert f"branch: starting from {grid / p['branch.trunk']} at step {p['branch.start_step']}" in log
  for name in NAMES:
    assert "in a stack process" in rundir.launch_log(grid / name).read_text()
    assert_same_run(grid / name, root / "solo" / name)
  shown = subprocess.run([sys.executable, "-m", "launch.manifest", f"--workdir={grid}"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0, shown.stderr
  assert "trunk t0 (done) -> 2 branch(es): b0 (done), b2 (done)" in shown.stdout
  assert "trunk t1 (done) -> 1 branch(es): b1 (done)" in shown.stdout


@pytest.mark.slow
def test_a_sigkilled_stack_of_branches_resumes_every_member_to_the_same_result(launched, tmp_path):
  """The branches start at steps 9, 6, 6 and end at 12, 8, 8, saving every step. The first kill
  comes mid-way for all three; the second before b0's last step (b1 and b2 finished by then unless
  the first kill cut their saves short)."""
  root, spec = launched
  killed = tmp_path / "killed"
  for trunk in TRUNKS:  # the stacked grid's trunks, finished
    shutil.copytree(root / "stacked" / trunk["run_name"], killed / trunk["run_name"])
  only = "--only=" + ",".join(p["run_name"] for p in BRANCHES)
  for step in (8, 12):
    res = train_stack(spec, killed, only, DLMSCALE_FAULT=f"kill:{step}")
    assert res.returncode == -9, (step, res.stdout[-2000:], res.stderr[-2000:])
    assert not rundir.is_finished(killed / "b0")
  res = train_stack(spec, killed, only)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
  assert "resuming at step" in res.stdout, res.stdout[-2000:]
  for p in BRANCHES:
    assert_same_run(killed / p["run_name"], root / "stacked" / p["run_name"], resumed=True, unlaunched=True)
