"""The launcher scenarios' plumbing: a 4-point micro grid run by `python -m launch.local` against the
fake trainer (helpers/fake_trainer.py), in one of two modes: "processes" (a trainer process per
point) or "workers" (the fake run in-process by a long-lived worker per slot, launch/worker.py)."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import time

from helpers.fake_trainer import POINT_FN, REPO, fake_env, ledger_events

MODES = ("processes", "workers")
GRID = "configs/datacons.py:scale=test"
NAMES = ["ar-s0.1M-u20k-e1-seed0", "mdm-s0.1M-u20k-e1-seed0", "ar-s0.1M-u20k-e2-seed0",
         "mdm-s0.1M-u20k-e2-seed0"]
FAKE_REPORT = """
import json, pathlib, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
out = pathlib.Path(args["out"]); out.mkdir(parents=True, exist_ok=True)
done = sorted(p.parent.name for p in pathlib.Path(args["runs"]).glob("*/summary.json"))
(out / "report.json").write_text(json.dumps({"done": done}))
"""


def launcher_env(tmp_path: pathlib.Path, mode: str = "processes", **extra: str) -> dict[str, str]:
  """The fake trainer's environment plus the fake report module; "workers" adds the point function."""
  assert mode in MODES, mode
  (tmp_path / "fakereport.py").write_text(FAKE_REPORT)
  env = fake_env(tmp_path, **extra)
  env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
  if mode == "workers":
    env["DLMSCALE_POINT_FN"] = POINT_FN
  return env


def start_launcher(workdir: pathlib.Path, env: dict[str, str], *extra: str, grid: str = GRID) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "launch.local", f"--config={grid}", f"--workdir={workdir}", "--poll_s=0.05",
         "--status_every=1", "--grace_s=20", "--report_module=fakereport", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(pred, timeout: float = 60.0) -> None:
  deadline = time.time() + timeout
  while not pred():
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def by_run(events: list[dict], kind: str) -> collections.Counter:
  return collections.Counter(e["run"] for e in events if e["event"] == kind)


def assert_each_run_completed_once(tmp_path: pathlib.Path, workdir: pathlib.Path, steps: int) -> list[dict]:
  events = ledger_events(tmp_path / "ledger.jsonl")
  assert by_run(events, "finished") == {n: 1 for n in NAMES}
  for name in NAMES:  # no step ran twice: never two trainers on one point, and resumes are resumes
    assert sorted(e["step"] for e in events if e["run"] == name and e["event"] == "step") == list(range(1, steps + 1))
    assert (workdir / name / "summary.json").exists()
  manifest = json.loads((workdir / "grid_manifest.json").read_text())
  assert {n: p["state"] for n, p in manifest["runs"].items()} == {n: "done" for n in NAMES}
  return events
