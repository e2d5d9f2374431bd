"""Errors a cluster user can read: crash files in the run directory, object-store workdirs, day ETAs."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from conftest import subprocess_env, tiny_config
from dlmscale import errors
from dlmscale import run_dir
from dlmscale.commands import guard
from dlmscale.errors import UserError
from dlmscale.train import loop, progress

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_an_internal_error_in_training_leaves_its_traceback_in_the_run_directory(
    tiny_corpus, data_cache, tmp_path, monkeypatch, capsys):
  def broken(run, clock):
    raise RuntimeError("a bug past the claim")
  monkeypatch.setattr(loop, "_run", broken)
  workdir = tmp_path / "run"
  try:
    rc = guard.guard(lambda: loop.train_and_evaluate(tiny_config(tiny_corpus, data_cache), workdir), "dlmscale.main")
  finally:
    errors.set_crash_dir(None)
  err = capsys.readouterr().err
  assert rc == 1
  crashes = list(workdir.glob("crash-*.txt"))
  assert len(crashes) == 1 and str(crashes[0]) in err
  assert "RuntimeError: a bug past the claim" in crashes[0].read_text()
  assert "in broken: raise RuntimeError" in err  # the last frames are on stderr too


def test_without_a_run_directory_the_traceback_goes_to_the_temp_directory(capsys):
  errors.set_crash_dir(None)
  def body():
    raise KeyError("k")
  assert guard.guard(body, "cmd") == 1
  path = pathlib.Path(re.search(r"traceback is in (\S+)\.", capsys.readouterr().err).group(1))
  assert "KeyError" in path.read_text() and not path.name.startswith("crash-")
  path.unlink()


@pytest.mark.parametrize("url", ["gs://bucket/runs/x", "s3://bucket/x", "gs://"])
def test_object_store_workdirs_are_refused_naming_a_mount(url):
  with pytest.raises(UserError, match="mount") as e:
    run_dir.check_workdir(url)
  assert "\n" not in str(e.value) and "/mnt/" in str(e.value)


@pytest.mark.parametrize("module", ["dlmscale.main", "launch.local"])
def test_the_commands_refuse_gs_workdirs_with_exit_2(module, tmp_path):
  cmd = [sys.executable, "-m", module, f"--config={REPO / 'configs/base.py'}", "--workdir=gs://bucket/x"]
  out = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
  assert out.returncode == 2, out.stderr
  assert "gcsfuse" in out.stderr and len(out.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "gs:").exists()


def test_eta_prints_days_beyond_a_day():
  line = progress.line(5, 100, 2.5, 1e4, None, 0.1, 3 * 86400 + 4 * 3600 + 5 * 60 + 6)
  assert line.endswith("ETA 3d 04:05:06")
  assert progress.line(5, 100, 2.5, 1e4, None, 0.1, 3661).endswith("ETA 01:01:01")
