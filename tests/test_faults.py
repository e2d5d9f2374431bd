"""Faults a cluster throws, provoked for real: a full disk during a checkpoint save (docs/faults.md
lists every fault test and its outcome)."""

from __future__ import annotations

import re
import shutil

import jax
import numpy as np
import pytest

from conftest import tiny_config
from helpers.mounts import small_tmpfs, tree_kib
from helpers.runs import final_params, losses, run_main


def _assert_same_run(a, b) -> None:
  assert losses(a) == losses(b)
  for x, y in zip(jax.tree.leaves(final_params(a)), jax.tree.leaves(final_params(b))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_full_disk_during_a_save_keeps_the_last_checkpoint_and_resumes_bitwise(
    tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")  # 12 steps, a checkpoint every 3, 3 kept
  straight = tmp_path / "straight"
  assert run_main(cfg, straight).returncode == 0
  # Room for the run's small files and three checkpoints, not a fourth: the save of step 12 fails.
  one = tree_kib(straight / "checkpoints" / "9")
  with small_tmpfs(tmp_path / "small", 3 * one + 160) as disk:
    full = run_main(cfg, disk / "run")
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 2, full.stderr[-3000:]
    assert len(lines) == 1 and "no space left on the disk mounted at" in lines[0], lines
    assert str(disk) in lines[0] and "checkpoint step 12 was not saved" in lines[0]
    assert "is step 9" in lines[0]
    assert "Traceback" not in full.stdout + full.stderr
    steps = sorted(int(p.name) for p in (disk / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 9 and not (disk / "run" / "summary.json").exists()
    moved = tmp_path / "moved"
    shutil.copytree(disk / "run", moved)  # the run moved to a disk with space
  again = run_main(cfg, moved)
  assert again.returncode == 0, again.stderr[-3000:]
  assert int(re.search(r"resuming at step (\d+)", again.stdout).group(1)) == 9
  _assert_same_run(moved, straight)
