"""Faults a cluster throws, provoked for real: a full disk during a checkpoint save,
a damaged prepared chunk file (docs/faults.md
lists every fault test and its outcome)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import subprocess_env, tiny_config
from helpers.mounts import small_tmpfs, tree_kib
from helpers.runs import REPO, final_params, losses, run_main


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


def _cli(module: str, workdir) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, f"--workdir={workdir}"], capture_output=True,
                        text=True, cwd=REPO, env=subprocess_env(), timeout=300)


@pytest.mark.slow
def test_damaged_prepared_chunk_file_is_refused_by_run_evaluate_and_sample(tiny_corpus, tmp_path):
  cfg = tiny_config(tiny_corpus, str(tmp_path / "cache"), "ar")  # its own cache: it gets damaged
  run = tmp_path / "run"
  assert run_main(cfg, run).returncode == 0
  [train_bin] = (tmp_path / "cache").rglob("train.bin")
  blob = bytearray(train_bin.read_bytes())
  blob[len(blob) // 2] ^= 0x01
  train_bin.write_bytes(bytes(blob))
  attempts = {"new run": lambda: run_main(cfg, tmp_path / "new"), "resume": lambda: run_main(cfg, run),
              "evaluate": lambda: _cli("dlmscale.evaluate", run),
              "sample": lambda: _cli("dlmscale.sample", run),
              # without the index the corpus is hashed and the prepared directory found by its key
              "new run, no index": lambda: (shutil.rmtree(tmp_path / "cache" / "index"),
                                            run_main(cfg, tmp_path / "new2"))[1]}
  for what, attempt in attempts.items():
    out = attempt()
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (what, out.stderr[-2000:])
    assert len(lines) == 1 and str(train_bin) in lines[0] and "sha256" in lines[0], (what, lines)
    assert f"rm -r {train_bin.parent}" in lines[0] and "python -m dlmscale.data" in lines[0], what
  assert not (tmp_path / "new" / "checkpoints").exists()
