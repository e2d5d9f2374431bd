"""Test doubles for the launcher tests: a fake trainer that honours the trainer's contract.

Run as `python -m helpers.fake_trainer --config=... --workdir=RUNDIR --config.KEY=VALUE ...` it takes
FAKE_STARTUP_S seconds with the default SIGTERM action, then
FAKE_STEPS steps of FAKE_STEP_S seconds, checkpoints after every step, resumes from RUNDIR, exits 0
on SIGTERM without summary.json, refuses (exit 2) a RUNDIR holding a different config, fails with
exit 1 for names in FAKE_FAIL (exit 3, diverged, for names in FAKE_DIVERGE), and appends one JSON event per line to FAKE_LEDGER, so a test can
count how often each run started, stepped and finished. run_point is the same fake as a worker's
point function (DLMSCALE_POINT_FN=POINT_FN). tests/test_launch_fakes.py checks the double itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import time

TESTS = pathlib.Path(__file__).resolve().parents[1]
REPO = TESTS.parent
TRAINER_MODULE = "helpers.fake_trainer"  # `python -m` it with tests/ on PYTHONPATH (fake_env does)
POINT_FN = "helpers.fake_trainer:run_point"


def fake_main(argv: list[str]) -> int:
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
  env["DLMSCALE_TRAINER_MODULE"] = TRAINER_MODULE
  env["FAKE_LEDGER"] = str(tmp_path / "ledger.jsonl")
  env.update(extra)
  return env


def run_point(request: dict) -> int:
  """The fake trainer in a worker's process (launch/worker.py, DLMSCALE_POINT_FN=POINT_FN)."""
  from launch import grids as grid_lib  # noqa: PLC0415  (the subprocess fake needs neither)
  from launch import worker  # noqa: PLC0415
  argv = [f"--config={request['spec']}", f"--workdir={request['workdir']}",
          *grid_lib.override_flags(request["overrides"])]
  rc = fake_main(argv)
  if rc == 0 and not (pathlib.Path(request["workdir"]) / "summary.json").exists():
    raise worker.Stopped(0)  # the fake swallowed a SIGTERM: this worker stops, as the real one does
  return rc


if __name__ == "__main__":
  sys.exit(fake_main(sys.argv[1:]))
