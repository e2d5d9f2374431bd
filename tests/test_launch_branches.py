"""A tiny WSD grid (configs/wsd.py: one trunk, two cooldown branches) launched for real by
launch.local: each branch waits for its trunk's checkpoint, starts from it, and the manifest shows
which trunk each branch grows from."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from conftest import subprocess_env
from dlmscale import run_dir as rundir
from dlmscale.train import checkpoint
from launch import branches
from launch import grids as grid_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
GRID = "configs/wsd.py:scale=test,objectives=ar"
TRUNK, E1, E2 = "ar-s0.1M-u10k-trunk-seed0", "ar-s0.1M-u10k-e1-seed0", "ar-s0.1M-u10k-e2-seed0"


def _sets(corpus: str, cache: str) -> list[str]:
  return [f"--set=data.corpus={corpus}", f"--set=data.cache_dir={cache}", "--set=eval.num_sequences=8",
          "--set=eval.batch_size=8"]


def test_grid_declares_one_trunk_and_a_branch_per_epoch_count():
  grid = grid_lib.load_points(GRID)
  assert list(grid.points) == [TRUNK, E1, E2]
  rel = branches.relations(grid)
  assert rel == {TRUNK: {"role": "trunk"}, E1: {"role": "branch", "trunk": TRUNK},
                 E2: {"role": "branch", "trunk": TRUNK}}
  starts = [grid.configs[n].branch.start_step for n in (E1, E2)]
  assert list(grid.configs[TRUNK].trunk.branch_steps) == starts
  assert grid.configs[TRUNK].epochs < grid.configs[E2].epochs  # the trunk stops at the last start


def test_launch_local_runs_a_trunk_and_its_branches(tiny_corpus, data_cache, tmp_path):
  workdir = tmp_path / "grid"
  cmd = [sys.executable, "-m", "launch.local", f"--config={GRID}", f"--workdir={workdir}",
         "--parallel=2", "--noreport", "--poll_s=0.1", *_sets(tiny_corpus, data_cache)]
  out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  grid = grid_lib.load_points(GRID, grid_lib.parse_sets([s.split("=", 1)[1] for s in _sets(tiny_corpus, data_cache)]))
  for name in (E1, E2):
    start = grid.configs[name].branch.start_step
    assert f"branch: starting from {workdir / TRUNK} at step {start}" in (
        rundir.launch_log(workdir / name).read_text() + (workdir / ".workers" / "slot0.log").read_text()
        + (workdir / ".workers" / "slot1.log").read_text())
    assert min(r["step"] for r in rundir.read_metrics(workdir / name)) > start
    assert start in checkpoint.saved_steps(rundir.checkpoints_dir(workdir / TRUNK))
  runs = json.loads((workdir / "grid_manifest.json").read_text())["runs"]
  assert runs[TRUNK]["role"] == "trunk" and runs[E1]["trunk"] == TRUNK and runs[E2]["role"] == "branch"
  shown = subprocess.run([sys.executable, "-m", "launch.manifest", f"--workdir={workdir}"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert shown.returncode == 0, shown.stderr
  assert f"trunk {TRUNK} (done) -> 2 branch(es): {E1} (done), {E2} (done)" in shown.stdout


def test_the_new_keys_at_their_defaults_leave_every_grid_hash_unchanged():
  from configs import base
  config = base.get_config()
  plain = base.get_config()
  for section in ("trunk", "branch"):
    del plain[section]
  del plain.eval["schedule"], plain.eval["log_points"]
  assert grid_lib.config_hash(config) == grid_lib.config_hash(plain)


def test_a_branch_whose_trunk_failed_or_is_not_launched_never_waits_forever(tmp_path):
  grid = grid_lib.load_points(GRID)
  assert not branches.ready(grid, tmp_path, E1) and branches.ready(grid, tmp_path, TRUNK)
  idle = lambda name: False
  assert branches.never(grid, tmp_path, E1, [TRUNK, E1], {}, idle) is None  # it may still come
  assert "failed" in branches.never(grid, tmp_path, E1, [TRUNK, E1], {TRUNK: "x"}, idle)
  assert "not in this launch" in branches.never(grid, tmp_path, E1, [E1], {}, idle)
  assert branches.never(grid, tmp_path, E1, [E1], {}, lambda name: True) is None  # running elsewhere
  start = grid.configs[E1].branch.start_step
  (rundir.checkpoints_dir(tmp_path / TRUNK) / str(start)).mkdir(parents=True)
  assert branches.ready(grid, tmp_path, E1)


def test_wsd_points_parse_back_through_ml_collections():
  """What the launchers put on a trunk's and a branch's command line is the point (tuples included)."""
  from absl import flags
  from ml_collections import config_flags
  from configs import grid, wsd
  base = wsd.get_config("scale=test")
  assert base.to_dict() == grid.apply_overrides(base, wsd.sweep("scale=test")[0]).to_dict()
  for p in wsd.sweep("scale=test")[:2]:
    fv = flags.FlagValues()
    argv = ["prog", "--config=configs/wsd.py:scale=test", *grid_lib.override_flags(p)]
    config_flags.DEFINE_config_file("config", None, "grid", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    got, want = fv.config.to_dict(), grid.apply_overrides(base, p).to_dict()
    assert got == want and tuple(got["trunk"]["branch_steps"]) == tuple(want["trunk"]["branch_steps"])
