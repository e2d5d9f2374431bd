"""The fake trainer of the launcher tests (tests/helpers/fake_trainer.py) keeps the trainer's
contract: it resumes after SIGTERM with every step run once, and refuses a run of another config."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

from helpers.fake_trainer import REPO, TRAINER_MODULE, fake_env, ledger_events


def _run_fake(tmp_path: pathlib.Path, rundir: pathlib.Path, **env: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", TRAINER_MODULE, "--config=x.py", f"--workdir={rundir}",
                           "--config.run_name=r"], env=fake_env(tmp_path, **env), cwd=REPO)


def test_fake_trainer_resumes_after_sigterm(tmp_path):
  rundir = tmp_path / "r"
  proc = _run_fake(tmp_path, rundir, FAKE_STEPS="30", FAKE_STEP_S="0.05")
  deadline = time.time() + 20
  while not any(e["event"] == "step" for e in ledger_events(tmp_path / "ledger.jsonl")):
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=20) == 0
  assert not (rundir / "summary.json").exists()
  stopped_at = json.loads((rundir / "ckpt.json").read_text())["step"]
  assert 0 < stopped_at < 30
  assert _run_fake(tmp_path, rundir, FAKE_STEPS="30", FAKE_STEP_S="0.01").wait(timeout=30) == 0
  events = ledger_events(tmp_path / "ledger.jsonl")
  assert [e["step"] for e in events if e["event"] == "start"] == [0, stopped_at]
  steps = [e["step"] for e in events if e["event"] == "step"]
  assert sorted(steps) == list(range(1, 31))  # every step exactly once across the two attempts
  assert (rundir / "summary.json").exists()


def test_fake_trainer_refuses_other_config(tmp_path):
  rundir = tmp_path / "r"
  rundir.mkdir()
  (rundir / "config.json").write_text(json.dumps({"config": "other.py", "overrides": {}}))
  assert _run_fake(tmp_path, rundir).wait(timeout=20) == 2
