"""Tracking and profiling a run: TensorBoard event files (tensorboardX) read back with TensorBoard's
own Event proto, wandb's offline files (where wandb is installed), and config.profile_steps' trace."""

from __future__ import annotations

import importlib.util
import struct

import ml_collections
import pytest

from conftest import tiny_config
from dlmscale import run_dir
from dlmscale.errors import UserError
from dlmscale.train import config_checks, profiler, tracking
from dlmscale.train import loop as train

HAS_WANDB = importlib.util.find_spec("wandb") is not None


def _events(path):
  """TFRecord frames -> Event protos (the proto TensorBoard reads; CRCs are tensorboardX's)."""
  from tensorboardX.proto import event_pb2
  data, pos, out = path.read_bytes(), 0, []
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos:pos + 8])
    out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + n]))
    pos += 16 + n
  return out


def test_tensorboard_scalars_read_back(tmp_path):
  t = tracking.Trackers(ml_collections.ConfigDict({"tensorboard": True}), tmp_path)
  t.write_scalars(7, {"train/loss": 2.5, "eval/loss": 3.0})
  t.close()
  (path,) = run_dir.tensorboard_dir(tmp_path).glob("events.out.tfevents.*")
  got = {(v.tag, e.step, v.simple_value) for e in _events(path) for v in e.summary.value}
  assert got == {("train/loss", 7, 2.5), ("eval/loss", 7, 3.0)}


def test_bad_settings_fail_up_front(tiny_corpus, data_cache):
  assert profiler.parse("") is None and profiler.parse("3:5") == (3, 5)
  for bad in ("3", "5:3", "0:2", "a:b"):
    with pytest.raises(UserError, match="profile_steps"):
      profiler.parse(bad)
  with pytest.raises(UserError, match="wandb.mode"):
    config_checks.validate(tiny_config(tiny_corpus, data_cache, **{"wandb.mode": "sometimes"}))


def test_run_writes_profile_trace_and_wandb_files(tmp_path, tiny_corpus, data_cache, monkeypatch):
  over = {"profile_steps": "2:3", "checkpoint.every_steps": 100, "eval.every_steps": 100}
  if HAS_WANDB:
    monkeypatch.setenv("WANDB_SILENT", "true")
    over.update({"wandb.project": "dlmscale-test", "wandb.mode": "offline"})
  workdir = tmp_path / "run"
  train.train_and_evaluate(tiny_config(tiny_corpus, data_cache, epochs=1.0, **over), workdir)
  traces = list(run_dir.profile_dir(workdir).rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0
  assert list(run_dir.tensorboard_dir(workdir).glob("events.out.tfevents.*"))
  if not HAS_WANDB:
    pytest.skip("wandb is optional (requirements-eval.txt): the trace was checked, wandb was not")
  runs = list((workdir / run_dir.WANDB).glob("offline-run-*"))
  assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
