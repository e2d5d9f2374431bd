"""The TPU launcher: --dry_run prints the exact gcloud commands; with a stand-in gcloud, a spot slice
preempted mid-point is recreated through its queued resource and the point resumed."""

from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import tarfile

import pytest

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


FAKE_GCLOUD = r'''#!{python}
import json, pathlib, sys
state_path = pathlib.Path({state!r})
s = json.loads(state_path.read_text())
argv = sys.argv[1:]
with open({calls!r}, "a") as f:
  f.write(" ".join(argv) + "\n")
kind, verb = argv[2], argv[3]
rc = 0
if kind == "tpu-vm" and verb == "describe":
  print(s["vm"]); rc = 0 if s["vm"] else 1
elif kind == "queued-resources" and verb == "describe":
  print(s["qr"]); rc = 0 if s["qr"] else 1
elif kind == "queued-resources" and verb == "create":
  s.update(qr="ACTIVE", vm="READY")
elif kind == "queued-resources" and verb == "delete":
  s.update(qr="", vm="")
elif verb == "ssh" and "dlmscale.main" in argv[-1] and s["preempt"]:
  s.update(preempt=s["preempt"] - 1, vm="", qr="SUSPENDED"); rc = 255
state_path.write_text(json.dumps(s))
sys.exit(rc)
'''


def test_preempted_slice_is_recreated_and_the_point_resumed(tmp_path, monkeypatch, capsys):
  state, calls = tmp_path / "state.json", tmp_path / "calls.txt"
  state.write_text(json.dumps({"vm": "", "qr": "", "preempt": 1}))
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD.format(python=sys.executable, state=str(state), calls=str(calls)))
  (bin_dir / "gcloud").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  assert tpu.main([*ARGV, "--queued", "--spot", "--noreport"]) == 0
  verbs = []
  for line in calls.read_text().splitlines():
    a = line.split()
    verbs.append(f"{a[2]} {a[3]}" + (f" {a[5]}" if a[3] == "ssh" else ""))
  kinds = ["" if "ssh" not in v else ("train" if "dlmscale.main" in l else "mark" if "--mark" in l
           else "init" if "--init" in l else "install") for v, l in zip(verbs, calls.read_text().splitlines())]
  steps = [f"{v} {k}".strip() for v, k in zip(verbs, kinds)]
  assert steps == [
      "tpu-vm describe", "queued-resources describe", "queued-resources describe", "queued-resources create",
      "queued-resources describe", "tpu-vm scp", "tpu-vm ssh --worker=all install", "tpu-vm ssh --worker=0 init",
      "tpu-vm ssh --worker=0 mark", "tpu-vm ssh --worker=all train",  # preempted here
      "tpu-vm describe", "queued-resources describe", "queued-resources delete", "queued-resources describe",
      "queued-resources create", "queued-resources describe", "tpu-vm describe", "tpu-vm scp",
      "tpu-vm ssh --worker=all install", "tpu-vm ssh --worker=0 mark", "tpu-vm ssh --worker=all train",
      "tpu-vm ssh --worker=0 mark"]
  assert calls.read_text().splitlines()[-1].endswith(f"--mark={NAME}=done")


def test_repo_tarball_holds_the_code_not_the_venv():
  with tarfile.open(fileobj=io.BytesIO(tpu.repo_tarball())) as tar:
    names = tar.getnames()
  assert "launch/tpu.py" in names and "configs/datacons.py" in names and "requirements.txt" in names
  assert not any(n.startswith(".venv") or "__pycache__" in n for n in names)


def test_relative_workdir_is_refused(capsys):
  assert tpu.main([f"--config={GRID}", "--workdir=runs/dc", "--tpu=dlm", "--zone=z", "--dry_run"]) == 2
  assert "absolute path on the workers" in capsys.readouterr().err
