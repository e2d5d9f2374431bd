"""Bad input to `python -m dlmscale.main` gets one clear line and exit 2, never a traceback."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from conftest import config_flags_for, subprocess_env, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(args: list[str], **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "dlmscale.main", *args], capture_output=True,
                        text=True, cwd=ROOT, env=subprocess_env(**env), timeout=300)


def _assert_user_error(out: subprocess.CompletedProcess, *needles: str) -> None:
  assert out.returncode == 2, (out.stdout, out.stderr)
  assert "Traceback" not in out.stderr, out.stderr
  for n in needles:
    assert n in out.stderr, out.stderr


def test_unknown_config_key_is_refused(tmp_path):
  _assert_user_error(_run(["--config=configs/base.py", f"--workdir={tmp_path}",
                           "--config.optim.lerning_rate=1e-3"]), "lerning_rate")


def test_unknown_model_size(tmp_path, tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache)
  args = ["--config=configs/base.py", f"--workdir={tmp_path}", *config_flags_for(cfg)]
  args = [a for a in args if not a.startswith("--config.model_size")] + ["--config.model_size=s7X"]
  _assert_user_error(_run(args), "s7X", "s1M")


@pytest.mark.parametrize("key,value", [("unique_tokens", "0"), ("unique_tokens", "-5"),
                                       ("epochs", "0.0"), ("batch_size", "-1")])
def test_non_positive_budget(tmp_path, key, value):
  _assert_user_error(_run(["--config=configs/base.py", f"--workdir={tmp_path}",
                           f"--config.{key}={value}"]), key)


def test_mesh_that_does_not_divide_devices(tmp_path, tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache, **{"mesh.data": 3})
  out = _run(["--config=configs/base.py", f"--workdir={tmp_path}", *config_flags_for(cfg)],
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  _assert_user_error(out, "mesh", "4")


def test_batch_that_does_not_divide_devices(tmp_path, tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache, batch_size=6)
  out = _run(["--config=configs/base.py", f"--workdir={tmp_path}", *config_flags_for(cfg)],
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  _assert_user_error(out, "batch_size=6")


def test_workdir_with_a_different_config_is_refused_and_kept(tmp_path, tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache, epochs=1.0)
  args = ["--config=configs/base.py", f"--workdir={tmp_path}", *config_flags_for(cfg)]
  assert _run(args).returncode == 0
  before = (tmp_path / "metrics.jsonl").read_text()
  other = tiny_config(tiny_corpus, data_cache, epochs=1.0, **{"optim.lr": 5e-3})
  out = _run(["--config=configs/base.py", f"--workdir={tmp_path}", *config_flags_for(other)])
  _assert_user_error(out, "different config", "optim.lr", "new --workdir")
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_missing_workdir_flag():
  _assert_user_error(_run(["--config=configs/base.py"]), "--workdir")
