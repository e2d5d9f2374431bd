"""The TPU launcher: --dry_run prints the exact gcloud commands; with a stand-in gcloud, a spot slice
preempted mid-point is recreated through its queued resource and the point resumed (the stand-in
runs the fake trainer, so "resumed" is counted step by step); a diverged point is not retried."""

from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import tarfile

import pytest

from helpers.fake_trainer import TRAINER_MODULE
from launch import tpu

GRID = "configs/datacons.py:scale=test"
WHERE = "--zone=us-west4-a --project=proj"
NAME = "ar-s0.1M-u20k-e1-seed0"
REMOTE = "cd ~/dlmscale && export PYTHONPATH=$PWD && "
TRAIN = (f".venv/bin/python -m dlmscale.main --config={GRID} --workdir=/mnt/runs/dc/{NAME} "
         "--config.objective=ar --config.model_size=s0.1M --config.unique_tokens=20000 --config.epochs=1.0 "
         f"--config.seed=0 --config.optim.lr=0.003 --config.eval.every_steps=19 --config.run_name={NAME}")
ARGV = [f"--config={GRID}", "--workdir=/mnt/runs/dc", "--tpu=dlm", "--zone=us-west4-a", "--project=proj",
        "--accelerator_type=v5litepod-16", f"--only={NAME}"]


def _mark(state: str) -> str:
  return (f"$ gcloud compute tpus tpu-vm ssh dlm --worker=0 {WHERE} '--command={REMOTE}.venv/bin/python -m "
          f"launch.manifest --workdir=/mnt/runs/dc --mark={NAME}={state}'")


def test_dry_run_prints_exact_gcloud_commands(capsys):
  assert tpu.main([*ARGV, "--queued", "--spot", "--dry_run", "--noreport"]) == 0
  cmds = [l for l in capsys.readouterr().out.splitlines() if l.startswith("$ ")]
  install = [c for c in cmds if "tar -xzf" in c]
  assert len(install) == 1 and "--worker=all" in install[0] and "'\"'\"'jax[tpu]==0.10.2'\"'\"'" in install[0]
  assert [c for c in cmds if c not in install] == [
      f"$ gcloud compute tpus tpu-vm describe dlm {WHERE} '--format=value(state)'",
      f"$ gcloud compute tpus queued-resources create dlm --node-id=dlm {WHERE} --accelerator-type=v5litepod-16 "
      "--runtime-version=v2-alpha-tpuv5-lite --spot",
      f"$ gcloud compute tpus queued-resources describe dlm {WHERE} '--format=value(state.state)'",
      f"$ gcloud compute tpus tpu-vm ssh dlm --worker=0 {WHERE} '--command=python3 -c '\"'\"'import sys; "
      f"print(\"%d.%d\" % sys.version_info[:2])'\"'\"''",
      f"$ gcloud compute tpus tpu-vm scp /tmp/dlmscale-launch.tgz dlm:/tmp/dlmscale.tgz --worker=all {WHERE}",
      f"$ gcloud compute tpus tpu-vm ssh dlm --worker=0 {WHERE} '--command={REMOTE}.venv/bin/python -m "
      f"launch.manifest --workdir=/mnt/runs/dc --init={GRID}'",
      _mark("running"),
      f"$ gcloud compute tpus tpu-vm ssh dlm --worker=all {WHERE} '--command={REMOTE}if [ -f "
      f"/mnt/runs/dc/{NAME}/summary.json ]; then echo {NAME} already finished; else {TRAIN}; fi'",
      _mark("done"),
  ]


def test_direct_create_without_queued_resources(capsys):
  assert tpu.main([*ARGV, "--dry_run", "--accelerator_type=v4-8", "--runtime_version=tpu-ubuntu2204-base"]) == 0
  out = capsys.readouterr().out
  assert (f"$ gcloud compute tpus tpu-vm create dlm {WHERE} --accelerator-type=v4-8 "
          "--version=tpu-ubuntu2204-base\n") in out
  assert "queued-resources" not in out
  report = f"--worker=0 {WHERE} '--command={REMOTE}.venv/bin/python -m analysis.report --runs=/mnt/runs/dc"
  assert (report in out) == (tpu.REPO_ROOT / "analysis" / "report.py").exists()  # the report, when there is one


FAKE_GCLOUD = r"""#!{python}
# A stand-in gcloud: VM and queued-resource states in a JSON file; `ssh --command=...` runs the
# command here (the repository is the 'VM', the venv's python is this one), except the install.
import json, os, pathlib, signal, subprocess, sys, time
state_path = pathlib.Path({state!r})
s = json.loads(state_path.read_text())
argv = sys.argv[1:]
with open({calls!r}, "a") as f:
  f.write(" ".join(argv) + "\n")
kind, verb = argv[2], argv[3]
rc = 0
def ledger_steps():
  p = pathlib.Path({ledger!r})
  return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
if kind == "tpu-vm" and verb == "describe":
  print(s["vm"]); rc = 0 if s["vm"] else 1
elif kind == "queued-resources" and verb == "describe":
  print(s["qr"]); rc = 0 if s["qr"] else 1
elif kind == "queued-resources" and verb == "create":
  s.update(qr="ACTIVE", vm="READY")
elif kind == "queued-resources" and verb == "delete":
  s.update(qr="", vm="")
elif verb == "ssh":
  cmd = next(a for a in argv if a.startswith("--command="))[len("--command="):]
  cmd = cmd.replace({remote!r}, "").replace(".venv/bin/python", sys.executable)
  if "tar -xzf" not in cmd:
    proc = subprocess.Popen(["bash", "-c", cmd], cwd={repo!r}, start_new_session=True)
    if " -m helpers.fake_trainer " in cmd and s["preempt"]:
      # a spot preemption: the VM's shutdown notice (SIGTERM) after a few steps, then it is gone
      while proc.poll() is None and sum(e["event"] == "step" for e in ledger_steps()) < s["preempt_after"]:
        time.sleep(0.02)
      os.killpg(proc.pid, signal.SIGTERM); proc.wait()  # every process on the VM
      s.update(preempt=s["preempt"] - 1, vm="", qr="SUSPENDED"); rc = 255
    else:
      rc = proc.wait()
state_path.write_text(json.dumps(s))
sys.exit(rc)
"""


def _stand_in(tmp_path, monkeypatch, **state) -> tuple[pathlib.Path, pathlib.Path]:
  """gcloud on PATH runs the launcher's commands on this machine with the fake trainer."""
  from helpers.fake_trainer import REPO as REPO_DIR, TESTS
  state_path, calls, ledger = tmp_path / "state.json", tmp_path / "calls.txt", tmp_path / "ledger.jsonl"
  state_path.write_text(json.dumps({"vm": "", "qr": "", "preempt": 0, "preempt_after": 3, **state}))
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD.format(
      python=sys.executable, state=str(state_path), calls=str(calls), ledger=str(ledger),
      remote=REMOTE, repo=str(REPO_DIR)))
  (bin_dir / "gcloud").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO_DIR)]))
  monkeypatch.setenv("FAKE_LEDGER", str(ledger))
  monkeypatch.setenv("FAKE_STEPS", "8")
  monkeypatch.setenv("FAKE_STEP_S", "0.05")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  return calls, ledger


def _steps(calls: pathlib.Path) -> list[str]:
  out = []
  for line in calls.read_text().splitlines():
    a = line.split()
    v = f"{a[2]} {a[3]}" + (f" {a[5]}" if a[3] == "ssh" else "")
    if a[3] == "ssh":
      v += " " + ("train" if TRAINER_MODULE in line else "mark" if "--mark" in line
                  else "init" if "--init" in line else "python" if "version_info" in line else "install")
    out.append(v)
  return out


def test_preempted_slice_is_recreated_and_the_point_resumed(tmp_path, monkeypatch):
  """The stand-in runs the (fake) trainer; a spot preemption after 3 steps recreates the slice and
  the point resumes from its checkpoint: every step runs exactly once, and the manifest says done."""
  from helpers.fake_trainer import ledger_events
  calls, ledger = _stand_in(tmp_path, monkeypatch, preempt=1)
  workdir = tmp_path / "dc"
  argv = [a.replace("/mnt/runs/dc", str(workdir)) for a in ARGV]
  assert tpu.main([*argv, "--queued", "--spot", "--noreport", f"--trainer_module={TRAINER_MODULE}"]) == 0
  assert _steps(calls) == [
      "tpu-vm describe", "queued-resources describe", "queued-resources describe", "queued-resources create",
      "queued-resources describe", "tpu-vm ssh --worker=0 python", "tpu-vm scp",
      "tpu-vm ssh --worker=all install", "tpu-vm ssh --worker=0 init",
      "tpu-vm ssh --worker=0 mark", "tpu-vm ssh --worker=all train",  # preempted here
      "tpu-vm describe", "queued-resources describe", "queued-resources delete", "queued-resources describe",
      "queued-resources create", "queued-resources describe", "tpu-vm describe", "tpu-vm ssh --worker=0 python",
      "tpu-vm scp",
      "tpu-vm ssh --worker=all install", "tpu-vm ssh --worker=0 mark", "tpu-vm ssh --worker=all train",
      "tpu-vm ssh --worker=0 mark"]
  events = [e for e in ledger_events(ledger) if e["run"] == NAME]
  starts = [e["step"] for e in events if e["event"] == "start"]
  assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 3  # the second attempt resumed
  assert sorted(e["step"] for e in events if e["event"] == "step") == list(range(1, 9))
  assert [e["event"] for e in events].count("finished") == 1
  assert (workdir / NAME / "summary.json").exists()
  manifest = json.loads((workdir / "grid_manifest.json").read_text())
  assert json.dumps(manifest).count('"done"') >= 1 and NAME in json.dumps(manifest)


def test_a_diverged_point_is_not_retried_like_a_preemption(tmp_path, monkeypatch):
  """Exit 3 (NaN/inf loss) is deterministic: one attempt, marked failed:3, the VM left alone."""
  from helpers.fake_trainer import ledger_events
  calls, ledger = _stand_in(tmp_path, monkeypatch, vm="READY", qr="ACTIVE")
  monkeypatch.setenv("FAKE_DIVERGE", NAME)
  workdir = tmp_path / "dc"
  argv = [a.replace("/mnt/runs/dc", str(workdir)) for a in ARGV]
  assert tpu.main([*argv, "--noreport", f"--trainer_module={TRAINER_MODULE}"]) == 1
  steps = _steps(calls)
  assert steps.count("tpu-vm ssh --worker=all train") == 1
  assert [e["event"] for e in ledger_events(ledger)] == ["boot", "diverged"]
  assert calls.read_text().splitlines()[-1].endswith(f"--mark={NAME}=failed:3")
  assert "queued-resources delete" not in steps and "queued-resources create" not in steps


def test_repo_tarball_holds_the_code_not_the_venv():
  with tarfile.open(fileobj=io.BytesIO(tpu.repo_tarball())) as tar:
    names = tar.getnames()
  assert "launch/tpu.py" in names and "configs/datacons.py" in names and "requirements.txt" in names
  assert not any(n.startswith(".venv") or "__pycache__" in n for n in names)


def test_relative_workdir_is_refused(capsys):
  assert tpu.main([f"--config={GRID}", "--workdir=runs/dc", "--tpu=dlm", "--zone=z", "--dry_run"]) == 2
  assert "absolute path on the workers" in capsys.readouterr().err


def test_an_old_python_on_the_vm_fails_first_in_one_line(tmp_path, monkeypatch, capsys):
  """Ubuntu 22.04 TPU images ship Python 3.10: refused before anything is copied or installed."""
  calls, _ = _stand_in(tmp_path, monkeypatch, vm="READY", qr="ACTIVE")
  fake = tmp_path / "bin" / "python3"
  fake.write_text("#!/bin/sh\necho 3.10\n")
  fake.chmod(0o755)
  assert tpu.main([*ARGV, "--noreport", f"--trainer_module={TRAINER_MODULE}"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "python3 is 3.10" in err and "3.11+" in err and "apt-get" in err
  assert _steps(calls)[-1] == "tpu-vm ssh --worker=0 python"  # nothing copied, nothing installed
