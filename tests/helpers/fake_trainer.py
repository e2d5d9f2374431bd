"""Test doubles for the launcher tests: a fake trainer that honours the trainer's contract.

Run as `python -m test_launch_fakes --config=... --workdir=RUNDIR --config.KEY=VALUE ...` it takes
FAKE_STARTUP_S seconds with the default SIGTERM action, then
FAKE_STEPS steps of FAKE_STEP_S seconds, checkpoints after every step, resumes from RUNDIR, exits 0
on SIGTERM without summary.json, refuses (exit 2) a RUNDIR holding a different config, fails with
exit 1 for names in FAKE_FAIL (exit 3, diverged, for names in FAKE_DIVERGE), and appends one JSON event per line to FAKE_LEDGER, so a test can
count how often each run started, stepped and finished. The tests below check the double itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent


def _fake_main(argv: list[str]) -> int:
  opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
  workdir = pathlib.Path(opts["workdir"])
  overrides = {k[len("config."):]: v for k, v in opts.items() if k.startswith("config.")}
  name = overrides.get("run_name", workdir.name)
  steps, dt = int(os.environ.get("FAKE_STEPS", "8")), float(os.environ.get("FAKE_STEP_S", "0.1"))
  ledger = pathlib.Path(os.environ["FAKE_LEDGER"])

  def event(kind: str, **kw) -> None:
    with open(ledger, "a") as f:
      f.write(json.dumps({"run": name, "event": kind, "pid": os.getpid(), **kw}) + "\n")

  workdir.mkdir(parents=True, exist_ok=True)
  mine = {"config": opts["config"], "overrides": overrides}
  cfg = workdir / "config.json"
  if cfg.exists() and json.loads(cfg.read_text()) != mine:
    print(f"error: {workdir} holds a run with a different config", file=sys.stderr)
    return 2
  cfg.write_text(json.dumps(mine))
  if name in os.environ.get("FAKE_FAIL", "").split(","):
    print(f"Traceback ...\nRuntimeError: fake failure of {name}", file=sys.stderr)
    event("fail")
    return 1
  event("boot")
  if name in os.environ.get("FAKE_DIVERGE", "").split(","):  # the trainer's NaN/inf contract: exit 3
    print(f"error: loss is nan (grad norm nan) at step 1; stopping ({name})", file=sys.stderr)
    event("diverged")
    return 3
  time.sleep(float(os.environ.get("FAKE_STARTUP_S", "0")))  # like imports + compile: SIGTERM still kills
  ckpt = workdir / "ckpt.json"
  step = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
  event("start", step=step, omp=os.environ.get("OMP_NUM_THREADS"), xla=os.environ.get("XLA_FLAGS"),
        cpus=sorted(os.sched_getaffinity(0)), t=time.time())
  stop = []
  signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
  while step < steps:
    if stop:
      event("preempted", step=step)
      return 0
    time.sleep(dt)
    step += 1
    (workdir / "ckpt.tmp").write_text(json.dumps({"step": step}))
    os.replace(workdir / "ckpt.tmp", ckpt)
    event("step", step=step)
  (workdir / "summary.json").write_text(json.dumps({"run_name": name, "steps": step}))
  event("finished", step=step, t=time.time())
  return 0


def ledger_events(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def fake_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
  env["DLMSCALE_TRAINER_MODULE"] = "test_launch_fakes"
  env["FAKE_LEDGER"] = str(tmp_path / "ledger.jsonl")
  env.update(extra)
  return env


def _run_fake(tmp_path: pathlib.Path, rundir: pathlib.Path, **env: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "test_launch_fakes", "--config=x.py", f"--workdir={rundir}",
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


if __name__ == "__main__":
  sys.exit(_fake_main(sys.argv[1:]))
