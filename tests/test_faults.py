"""Faults a cluster throws, provoked for real: a full disk during a checkpoint save, a slow and
stalling workdir disk, SIGKILL inside orbax's asynchronous save or inside a data preparation another
run waits on, a damaged prepared chunk file (docs/faults.md lists every fault test and its
outcome)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import config_flags_for, subprocess_env, tiny_config, write_tiny_corpus
from helpers.mounts import frozen, slow_disk, small_tmpfs, tree_kib
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
  # Half a checkpoint more than three: a save's temporary files briefly take more than the finished
  # checkpoint, and without that margin the disk now and then filled one save early (step 9).
  one = tree_kib(straight / "checkpoints" / "9")
  with small_tmpfs(tmp_path / "small", 3 * one + one // 2 + 160) as disk:
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


@pytest.mark.slow
def test_slow_and_stalling_workdir_disk_only_slows_the_run(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")  # 12 steps, a checkpoint every 3
  straight = tmp_path / "straight"
  assert run_main(cfg, straight).returncode == 0
  stall_s = 5.0
  # The workdir on a disk that writes 256 KiB/s, each write synchronous (as on NFS), and that stops
  # taking writes for stall_s once the first checkpoint is complete (a server that stops answering).
  with slow_disk(tmp_path / "slow", 64, 256) as (disk, cgroup_procs):
    run = disk / "run"
    cmd = [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py", f"--workdir={run}",
           *config_flags_for(cfg)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env=subprocess_env(), preexec_fn=lambda: pathlib.Path(cgroup_procs).write_text(
                             str(os.getpid())))
    while p.poll() is None and not (run / "checkpoints" / "3").is_dir():
      time.sleep(0.05)
    with frozen(disk):
      time.sleep(stall_s)
      stalled_mid_run = p.poll() is None
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0 and stalled_mid_run, err[-3000:]
    assert "Traceback" not in out + err and "warning: checkpoint" not in out, err[-3000:]
    slow = json.loads((run / "summary.json").read_text())["phases"]
    fast = json.loads((straight / "summary.json").read_text())["phases"]
    # what the user sees of a slow disk: the time spent on checkpoints in summary.json's phases
    assert slow["checkpoint"] > fast["checkpoint"] + 1.0, (slow, fast)
    assert slow["total"] > fast["total"] - fast["compile"] + stall_s - 1.0, (slow, fast)
    _assert_same_run(run, straight)


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


def _resumed_at(stdout: str) -> int:
  found = re.search(r"resuming at step (\d+)", stdout)
  return int(found.group(1)) if found else 0


def _kill_during_a_save(cmd: list[str], ckpt_dir, from_step: int, rng) -> tuple[int, str, int]:
  """Starts `cmd` and SIGKILLs it a random 0-30 ms after orbax starts the save of a step >=
  `from_step` (its temporary directory appears); returns that step, the stdout and the exit code."""
  p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                       env=subprocess_env())
  saving = -1
  while p.poll() is None and saving < 0:
    for d in ckpt_dir.glob("*.orbax-checkpoint-tmp*") if ckpt_dir.is_dir() else ():
      step = d.name.split(".")[0]
      if step.isdigit() and int(step) >= from_step:
        saving = int(step)
    time.sleep(0.0005)
  if saving >= 0:
    time.sleep(rng.uniform(0, 0.03))
    p.kill()
  out, _ = p.communicate(timeout=300)
  return saving, out, p.returncode


@pytest.mark.slow
def test_kills_inside_async_saves_never_restore_a_partial_checkpoint_and_end_bitwise(
    tiny_corpus, data_cache, tmp_path):
  kills = 20
  cfg = tiny_config(tiny_corpus, data_cache, "ar", epochs=6.0,  # 24 steps, a save after each
                    **{"checkpoint.every_steps": 1, "eval.every_steps": 8})
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  assert run_main(cfg, straight).returncode == 0
  cmd = [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py", f"--workdir={broken}",
         *config_flags_for(cfg)]
  rng, previous, partial = random.Random(0), None, 0
  for i in range(kills):
    saving, out, rc = _kill_during_a_save(cmd, broken / "checkpoints", i + 1, rng)
    assert rc == -9 and saving >= i + 1, (i, rc, out[-2000:])
    partial += any((broken / "checkpoints").glob(f"{saving}.orbax-checkpoint-tmp*"))
    assert "warning: checkpoint" not in out and "Traceback" not in out, out[-2000:]
    if previous is not None:  # the kill before fell back at most one checkpoint
      assert _resumed_at(out) >= previous - 1, (i, previous, out[-2000:])
    previous = saving
  assert partial >= 1  # some kills left a half-written checkpoint behind (the rest landed just after)
  last = run_main(cfg, broken)
  assert last.returncode == 0 and "warning: checkpoint" not in last.stdout, last.stderr[-2000:]
  assert _resumed_at(last.stdout) >= previous - 1
  _assert_same_run(broken, straight)


def _prepare_script(corpus: str, out) -> str:
  return ("import json\nfrom configs import base\nfrom dlmscale.data import pipeline\n"
          f"c = base.get_config().data\nc.corpus, c.vocab_size, c.seq_len = {corpus!r}, 384, 32\n"
          f"print(json.dumps(pipeline.prepare(c, out_dir={str(out)!r}).manifest))\n")


def _blocked_on_a_lock(pid: int) -> bool:
  """Whether process `pid` waits for a file lock (/proc/locks lists a waiter as `-> FLOCK ... pid`)."""
  try:
    return any(l.split()[1] == "->" and l.split()[5] == str(pid)
               for l in pathlib.Path("/proc/locks").read_text().splitlines() if len(l.split()) > 5)
  except OSError:
    return False


@pytest.mark.slow
def test_kill_inside_a_preparation_while_another_waits_on_its_lock(tmp_path):
  corpus = write_tiny_corpus(tmp_path / "corpus", n_docs=400)  # a build of a few seconds
  began = time.monotonic()
  reference = subprocess.run([sys.executable, "-c", _prepare_script(corpus, tmp_path / "ref")],
                             cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert reference.returncode == 0, reference.stderr[-2000:]
  build_s = time.monotonic() - began
  rng, half_written, waited = random.Random(1), 0, 0
  # build_s includes the interpreter's start-up, so most of it is spent before the lock is taken:
  # kills land within the first fifth of it, and the loop goes on (at least 5 kills, at most 20)
  # until one of them has provably landed mid-build.
  for i in range(20):
    if i >= 5 and waited and half_written:
      break
    out = tmp_path / f"shared{i}"
    start = lambda: subprocess.Popen([sys.executable, "-c", _prepare_script(corpus, out)], cwd=REPO,
                                     env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
    first = start()
    while first.poll() is None and not list(tmp_path.glob(f".{out.name}.tmp-*")):
      time.sleep(0.005)  # the first holds the lock and is building
    waiting = start()
    while first.poll() is None and not _blocked_on_a_lock(waiting.pid):
      time.sleep(0.005)
    waited += first.poll() is None
    time.sleep(rng.uniform(0.0, build_s / 5))
    first.kill()
    first.communicate(timeout=60)
    half_written += first.returncode == -9 and not out.exists()
    stdout, stderr = waiting.communicate(timeout=300)  # no deadlock: the lock died with its holder
    assert waiting.returncode == 0, stderr[-2000:]
    assert json.loads(stdout)["splits"] == json.loads(reference.stdout)["splits"]  # same sha256s
    assert not list(tmp_path.glob(f".{out.name}.tmp-*"))  # the killed builder's files are gone
  assert waited >= 1 and half_written >= 1, (waited, half_written)  # the rest landed just after
