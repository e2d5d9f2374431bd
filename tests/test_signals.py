"""SIGTERM at any moment of a run's life: it exits 0 (or has finished), and a re-run completes
bitwise equal to a run that was never interrupted. The moments are drawn at random (fixed seeds).

A signal that arrives before the interpreter reaches dlmscale.main's first instruction gets the
operating system's default (killed by SIGTERM); the test accepts that only when the workdir was
not even created, so nothing can be half-written.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import config_flags_for, subprocess_env, tiny_config
from dlmscale.train import checkpoint
from dlmscale import run_dir as rundir

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cmd(cfg, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py", f"--workdir={workdir}",
          *config_flags_for(cfg)]


def _run(cfg, workdir: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run(_cmd(cfg, workdir), capture_output=True, text=True, cwd=ROOT,
                        env=subprocess_env(), timeout=300)


def _term_after(cfg, workdir: pathlib.Path, seconds: float) -> tuple[int, str]:
  proc = subprocess.Popen(_cmd(cfg, workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=ROOT, env=subprocess_env())
  time.sleep(seconds)
  try:
    proc.send_signal(signal.SIGTERM)
  except ProcessLookupError:
    pass
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def _record(workdir: pathlib.Path) -> tuple[list, list]:
  losses = [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(workdir)]
  params = jax.tree.leaves(checkpoint.load_arrays(workdir / "checkpoints")["params"])
  return losses, params


@pytest.fixture(scope="module")
def straight(tiny_corpus, data_cache, tmp_path_factory):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  workdir = tmp_path_factory.mktemp("straight") / "run"
  out = _run(cfg, workdir)
  assert out.returncode == 0, out.stderr
  return cfg, _record(workdir)


def _check_moments(straight, tmp_path: pathlib.Path, moments: list[float]) -> None:
  cfg, (losses, params) = straight
  for i, t in enumerate(moments):
    workdir = tmp_path / f"t{i}"
    rc, out = _term_after(cfg, workdir, t)
    assert "Traceback" not in out, (t, out)
    if rc == -signal.SIGTERM:  # before the interpreter ran our code: nothing may exist
      assert not workdir.exists(), (t, out)
    else:  # stopped cleanly, or finished and then signalled during exit
      assert rc == 0, (t, rc, out)
    again = _run(cfg, workdir)
    assert again.returncode == 0, (t, again.stdout, again.stderr)
    got_losses, got_params = _record(workdir)
    assert got_losses == losses, t
    for a, b in zip(got_params, params):
      np.testing.assert_array_equal(a, b)


def test_sigterm_at_a_random_start_up_moment_exits_cleanly_and_resumes_bitwise(straight, tmp_path):
  # One moment in the window (1.5-3 s: JAX and XLA starting) that used to end in SIGSEGV.
  moments = np.random.default_rng(18).uniform(1.5, 3.0, size=1).round(2).tolist()
  _check_moments(straight, tmp_path, moments)


@pytest.mark.slow
def test_sigterm_at_twenty_random_moments_in_ten_seconds(straight, tmp_path):
  moments = sorted(np.random.default_rng(1818).uniform(0.0, 10.0, size=20).round(2).tolist())
  _check_moments(straight, tmp_path, moments)
