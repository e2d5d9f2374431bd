"""Checkpoints carry sha256s of their files: a flipped byte in the array data is detected, the
checkpoint is skipped (and set aside, never deleted) and the run resumes bitwise from the one before.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np
import pytest

from conftest import tiny_config
from dlmscale.train import checkpoint
from dlmscale import run_dir as rundir
from dlmscale.train import loop as train


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.name != checkpoint.CHECKSUMS]
  return max(files, key=lambda p: p.stat().st_size)


def _restore_latest(cfg, workdir: pathlib.Path) -> checkpoint.Restored:
  """The newest readable checkpoint, read as the evaluator does (nothing set aside)."""
  from dlmscale.data import pipeline
  from dlmscale.runtime import sharding
  from dlmscale.train import steps as program
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", 3)
  prepared = pipeline.prepare(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, 12, mesh)
  with jax.set_mesh(mesh):
    restored = ckpt.restore_latest(setup.abstract_state)
  ckpt.close()
  return restored


@pytest.fixture(scope="module")
def finished(tiny_corpus, data_cache, tmp_path_factory):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  workdir = tmp_path_factory.mktemp("integrity") / "run"
  train.train_and_evaluate(cfg, workdir)
  return cfg, workdir


def test_every_checkpoint_records_checksums_that_verify(finished):
  _, workdir = finished
  steps = [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 3  # checkpoint.keep
  for step_dir in steps:
    sums = json.loads((step_dir / checkpoint.CHECKSUMS).read_text())
    assert any(k.startswith("state/") for k in sums)
    assert checkpoint.verify(step_dir) is None


def test_flipped_byte_is_detected_skipped_set_aside_and_resumed_bitwise(finished, tmp_path, capsys):
  cfg, original = finished
  final = checkpoint.load_arrays(original / "checkpoints")["params"]
  rows = [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(original)]
  # A copy of the run whose newest checkpoint gets one flipped byte, same size.
  workdir = tmp_path / "run"
  import shutil
  shutil.copytree(original, workdir)
  (workdir / "summary.json").unlink()
  newest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  victim = _largest_array_file(workdir / "checkpoints" / str(newest))
  blob = bytearray(victim.read_bytes())
  blob[len(blob) // 2] ^= 0x01
  victim.write_bytes(bytes(blob))
  assert "sha256" in checkpoint.verify(workdir / "checkpoints" / str(newest))

  capsys.readouterr()
  train.train_and_evaluate(cfg, workdir)
  out = capsys.readouterr().out
  warnings = [l for l in out.splitlines() if l.startswith("warning: checkpoint")]
  assert len(warnings) == 1 and f"step {newest}" in warnings[0] and "sha256" in warnings[0]
  assert "Traceback" not in out
  assert (workdir / "checkpoints" / f"{checkpoint.UNREADABLE_PREFIX}{newest}").is_dir()  # kept
  assert (workdir / "checkpoint_errors.log").read_text().count(f"step {newest}") == 1
  assert f"resuming at step {newest - cfg.checkpoint.every_steps}" in out
  got = checkpoint.load_arrays(workdir / "checkpoints")["params"]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(final)):
    np.testing.assert_array_equal(a, b)
  assert [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(workdir)] == rows
  # The re-trained newest checkpoint is readable again and rotation kept the readable ones.
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert newest in kept and all(checkpoint.verify(workdir / "checkpoints" / str(s)) is None for s in kept)


def test_truncated_file_is_one_warning_line_not_orbax_tracebacks(finished, tmp_path, capsys):
  cfg, original = finished
  workdir = tmp_path / "run"
  import shutil
  shutil.copytree(original, workdir)
  for step_dir in (workdir / "checkpoints").iterdir():
    if step_dir.name.isdigit():
      (step_dir / checkpoint.CHECKSUMS).unlink()  # as a checkpoint from before checksums
  newest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  victim = _largest_array_file(workdir / "checkpoints" / str(newest))
  victim.write_bytes(victim.read_bytes()[:10])
  capsys.readouterr()
  restored = _restore_latest(cfg, workdir)
  captured = capsys.readouterr()
  assert restored.step < newest
  assert "Traceback" not in captured.out + captured.err
  assert len([l for l in captured.out.splitlines() if l.startswith("warning:")]) == 1
  assert (workdir / "checkpoints" / str(newest)).is_dir()  # not set aside outside the trainer


def test_failed_restore_leaves_no_read_in_flight(finished, tmp_path, monkeypatch, capsys):
  """Orbax reads arrays concurrently and stops at the first failure: the reads still in flight must
  settle inside the restore, not die later as unraisable coroutines or "Event loop is closed"."""
  import asyncio
  import gc
  import shutil
  import sys
  import threading
  from orbax.checkpoint._src.serialization import serialization
  cfg, original = finished
  workdir = tmp_path / "run"
  shutil.copytree(original, workdir)
  newest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  (workdir / "checkpoints" / str(newest) / checkpoint.CHECKSUMS).unlink()
  victim = _largest_array_file(workdir / "checkpoints" / str(newest))
  victim.write_bytes(victim.read_bytes()[:10])
  read = serialization._read_shard

  async def failing_fast_reading_slow(*args, **kwargs):  # the good reads outlive the failed one
    out = await read(*args, **kwargs)
    await asyncio.sleep(0.2)
    return out
  monkeypatch.setattr(serialization, "_read_shard", failing_fast_reading_slow)
  left: list = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: left.append(u.exc_value))
  monkeypatch.setattr(threading, "excepthook", lambda a: left.append(a.exc_value))
  restored = _restore_latest(cfg, workdir)
  time.sleep(0.5)
  gc.collect()
  assert restored.step < newest
  assert left == []
  assert "Traceback" not in "".join(capsys.readouterr())
