"""What the README promises about a run, checked through `python -m dlmscale.main` itself: a NaN
loss exits 3 and keeps the last good checkpoint, an unreadable checkpoint falls back to the one
before (and the resumed run is still exact), a held workdir and a changed tokenizer are refused,
and a run resumed on another device count continues with the same data. Also: the analysis
fixtures (tests/helpers/fakeruns.py) write what the real trainer writes.
"""

from __future__ import annotations

import json
import re
import pathlib
import shutil

import jax
import numpy as np
import pytest

from conftest import tiny_config, write_tiny_corpus
from dlmscale.train import checkpoint
from dlmscale import run_dir as rundir
from helpers.fakeruns import make_run
from helpers.runs import final_params as _final_params, losses as _losses, run_main as _main, trained_run

ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _ckpt_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _one_line_error(proc) -> str:
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_corpus, data_cache):
  """A straight run and the same run stopped by SIGTERM before step 5 (checkpoints 3 and 5)."""
  root = tmp_path_factory.mktemp("contracts")
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  straight = _main(cfg, root / "straight", **ONE_DEVICE)
  assert straight.returncode == 0, straight.stderr[-3000:]
  stopped = _main(cfg, root / "stopped", DLMSCALE_FAULT="term:5", **ONE_DEVICE)
  assert stopped.returncode == 0, stopped.stderr[-3000:]
  assert _ckpt_steps(root / "stopped") == [3, 5]
  return cfg, root


def test_nan_loss_exits_3_and_keeps_the_last_good_checkpoint(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  out = _main(cfg, tmp_path, DLMSCALE_FAULT="nan:5", **ONE_DEVICE)
  assert out.returncode == 3
  line = _one_line_error(out)
  assert "loss is nan" in line and "at step 5" in line and "last good checkpoint" in line
  assert _ckpt_steps(tmp_path) == [3]  # nothing saved from the diverged state
  assert not (tmp_path / "summary.json").exists()
  params = checkpoint.load_arrays(tmp_path / "checkpoints")["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  rows = rundir.read_metrics(tmp_path)
  assert max(r["step"] for r in rows) < 5 and all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.slow  # three trainer runs (the fixture's two are shared)
def test_unreadable_checkpoint_falls_back_and_the_resume_is_still_exact(runs, tmp_path):
  cfg, root = runs
  work = tmp_path / "run"
  shutil.copytree(root / "stopped", work)
  for f in (work / "checkpoints" / "5" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and not f.name.startswith("_"):
      f.write_bytes(b"\0" * 7)  # a truncated, garbled file: complete directory, unreadable data
  out = _main(cfg, work, **ONE_DEVICE)
  assert out.returncode == 0, out.stderr[-3000:]
  assert re.search(r"checkpoint step 5 in \S+ is unreadable", out.stdout) and "resuming at step 3" in out.stdout
  assert (work / "checkpoints" / "5").exists() or 5 not in _ckpt_steps(work)  # never deleted by us
  assert _losses(work) == _losses(root / "straight")
  for x, y in zip(jax.tree.leaves(_final_params(root / "straight")), jax.tree.leaves(_final_params(work))):
    np.testing.assert_array_equal(x, y)


def test_a_workdir_held_by_another_trainer_is_refused(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  tmp_path.mkdir(exist_ok=True)
  lock = rundir.WorkdirLock(tmp_path)  # this process plays the other trainer
  try:
    out = _main(cfg, tmp_path, **ONE_DEVICE)
  finally:
    lock.release()
  assert out.returncode == 2
  assert "another process is training in" in _one_line_error(out)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing of a run was written


@pytest.mark.slow  # two trainer runs and a data preparation
def test_a_changed_tokenizer_is_refused_on_resume(tmp_path, data_cache):
  corpus = write_tiny_corpus(tmp_path / "corpus")
  cfg = tiny_config(corpus, data_cache, "ar")
  work = tmp_path / "run"
  assert _main(cfg, work, DLMSCALE_FAULT="term:4", **ONE_DEVICE).returncode == 0
  assert _ckpt_steps(work) == [3, 4]
  for doc in sorted((tmp_path / "corpus").glob("*.txt"))[:20]:  # the same path, other text
    doc.write_text(doc.read_text().upper())
  before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
  out = _main(cfg, work, **ONE_DEVICE)
  assert out.returncode == 2
  line = _one_line_error(out)
  assert "other data than is prepared" in line and "sha256" in line and "--allow_new_data" in line
  assert _ckpt_steps(work) == [3, 4] and not (work / "summary.json").exists()
  changed = [p for p, b in before.items() if p.name != ".lock" and (not p.exists() or p.read_bytes() != b)]
  assert not changed, changed  # the refused resume touched nothing the run had


@pytest.mark.slow  # three trainer runs (the fixture's two are shared)
def test_resume_on_another_device_count_continues_with_the_same_data(runs, tmp_path):
  """Stopped on 2 CPU devices, resumed on 1: the run continues from its checkpoint with the same
  batches and masks. Not bitwise (the 2-device gradient sum rounds differently), so the check is the
  float tolerance of the 1- vs 4-device test in test_train.py."""
  cfg, root = runs
  two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert _main(cfg, tmp_path, DLMSCALE_FAULT="term:5", **two).returncode == 0
  out = _main(cfg, tmp_path, **ONE_DEVICE)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resuming at step 5" in out.stdout
  assert json.loads((tmp_path / "summary.json").read_text())["device_count"] == 1
  la, lb = _losses(root / "straight"), _losses(tmp_path)
  assert [r[:2] for r in la] == [r[:2] for r in lb]  # every step and eval exactly once
  np.testing.assert_allclose([r[2] for r in la], [r[2] for r in lb], rtol=2e-4)
  for x, y in zip(jax.tree.leaves(_final_params(root / "straight")), jax.tree.leaves(_final_params(tmp_path))):
    np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-5)


def _shape(value) -> str:
  return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_fabricated_runs_write_what_the_trainer_writes(tmp_path_factory, tiny_corpus, data_cache, tmp_path):
  """The contract the analysis tests rely on, read from one real (test-scale) trainer run: every key
  a fabricated run writes exists in the real files with the same JSON type, per file and per split."""
  real = trained_run(tmp_path_factory, tiny_corpus, data_cache, "ar")
  fake = make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=4, mc_accuracy=None)
  for name in ("config.json", "summary.json"):
    r, f = (json.loads((d / name).read_text()) for d in (real, fake))
    for key, value in rundir.flatten(f).items():
      assert key in rundir.flatten(r), f"{name}: {key} is not written by the trainer"
      assert _shape(value) == _shape(rundir.flatten(r)[key]), f"{name}: {key}"
  real_rows, fake_rows = (rundir.read_metrics(d) for d in (real, fake))
  for split in ("train", "eval"):
    real_keys = {k: _shape(v) for row in real_rows if row["split"] == split for k, v in row.items()}
    for row in (r for r in fake_rows if r["split"] == split):
      assert {k: _shape(v) for k, v in row.items()}.items() <= real_keys.items(), split
