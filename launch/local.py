"""Runs every point of a grid on this machine, resumably:

  python -m launch.local --config=configs/FILE.py[:ARGS] --workdir=DIR [--parallel=N] [--dry_run]

Each point trains into DIR/<run_name>/ as `python -m dlmscale.main` would train it: by default in a
long-lived worker process per slot (launch/worker.py), which keeps imports, JAX and the prepared data
between points; `--noworkers` starts a trainer process per point; `--stack=N` trains up to N points
of one compiled shape as one program per slot (launch/stacks.py), `--stack=auto` as many as fit the
device's memory (decided on the device by the stack process). Finished points (with a run summary) are
skipped, partial ones resume from their checkpoint. Launchers sharing DIR split the work through
per-run locks (launch/manifest.py) and wait for each other's points, so every launcher returns when
the whole grid is settled. A WSD branch starts once its trunk has saved the checkpoint it starts
from (launch/branches.py). Ctrl-C or SIGTERM asks every run to checkpoint and stop; re-running the
command continues. A failed run is reported with its log and does not stop the others.

Threads: N parallel runs split the usable cores, each pinned to its own K = cores // N (Linux) with
thread counts to match (launch/cpus.py); a single run keeps every core and the caller's environment.
Exit status: 0 all points done, 1 some failed, 2 bad input, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any, TextIO

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from launch import attempts, branches, cpus, grid_report, stacks
from launch import grids as grid_lib, manifest as mf, worker as worker_lib

REPO_ROOT = grid_lib.REPO_ROOT
WORKER_LOGS = ".workers"  # DIR/.workers/slotN.log: what a worker prints between points
MAX_UNEXPECTED_STOPS = 3  # exits with 0 but no run summary, before the point counts as failed
# Exit statuses of a trainer we stopped before it could install its SIGTERM handler (or past the
# grace period): resumable, not failed.
STOPPED_BY_US = {-signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM, 128 + signal.SIGKILL}


@dataclasses.dataclass
class Active:
  name: str
  proc: subprocess.Popen | worker_lib.Job  # both: .pid (its own process group), .poll()
  lock: mf.RunLock
  slot: int
  started: float
  log: TextIO


class Launcher:
  """The scheduling loop: fill free slots with unlocked unfinished points, reap, report, repeat."""

  def __init__(self, grid: grid_lib.Grid, workdir: pathlib.Path, args: argparse.Namespace,
               names: list[str]):
    self.grid, self.workdir, self.args, self.names = grid, workdir, args, names
    self.todo = [n for n in names if not mf.is_finished(workdir, n)]
    self.cpus = cpus.usable_cpus()
    self.threads = cpus.check_parallel(args.parallel, len(self.cpus))
    self.active: dict[str, Active] = {}
    self.workers = worker_lib.Pool(  # one long-lived worker per slot (unless --noworkers)
        lambda slot: worker_lib.Handle(self._env(), REPO_ROOT, workdir / WORKER_LOGS / f"slot{slot}.log",
                                       args.point_fn, self._pinned(slot)))
    self.failed: dict[str, str] = {}  # name -> reason
    self.elsewhere: set[str] = set()
    self.tries: dict[str, int] = {}
    self.stop_signal = 0
    self.kill_now = False
    recorded = (mf.read(workdir) or {"runs": {}})["runs"]
    self.sec_per_cost = [(p["wall_s"], grid.costs[n]) for n, p in recorded.items()  # (wall_s, cost)
                         if p["state"] == "done" and p.get("wall_s") and n in grid.costs]
    self.last_status = 0.0
    self.use_workers = bool(args.workers and args.point_fn)

  # --- signals ---

  def on_signal(self, signum: int, _frame: Any) -> None:
    if self.stop_signal:
      self.kill_now = True  # second Ctrl-C: do not wait for checkpoints
    self.stop_signal = signum

  # --- one run ---

  def _env(self) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(cpus.thread_env(self.threads, self.args.parallel, env.get("XLA_FLAGS", "")))
    return env

  def _pinned(self, slot: int) -> list[int] | None:
    pin = self.args.parallel > 1 and self.args.pin_cpus and hasattr(os, "sched_setaffinity")
    return cpus.slot_cpus(self.cpus, slot, self.threads) if pin else None

  def _worker_job(self, name: str, slot: int, lock: mf.RunLock) -> worker_lib.Job:
    request = {"name": name, "spec": self.grid.spec, "overrides": self.grid.points[name],
               "workdir": str(self.workdir / name)}
    return self.workers.job(slot, request, lock.fd)

  def _start(self, name: str, lock: mf.RunLock, proc: Any = None, slot: int | None = None,
             cmd: list[str] | None = None) -> None:
    slot = min(set(range(self.args.parallel)) - {a.slot for a in self.active.values()}) if slot is None else slot
    rundir = self.workdir / name
    rundir.mkdir(parents=True, exist_ok=True)
    cmd = cmd or [sys.executable, "-m", self.args.trainer_module, *self.grid.trainer_args(name, self.workdir)]
    cpus = self._pinned(slot)
    log = open(run_dir.launch_log(rundir), "a")
    attempt = self.tries.get(name, 0) + 1
    where = "in a stack process, as " if proc else "in a worker process, as " if self.use_workers else ""
    log.write(f"\n{attempts.ATTEMPT_MARK}{mf.now()} attempt {attempt} on {socket.gethostname()} (launcher pid {os.getpid()}, "
              f"{self.threads} threads{', cpus ' + str(cpus) if cpus else ''}) ===\n"
              f"{where}{' '.join(cmd)}\n")
    log.flush()
    if proc is None and self.use_workers:
      proc = self._worker_job(name, slot, lock)
    elif proc is None:
      proc = subprocess.Popen(
          cmd, cwd=REPO_ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
          stdin=subprocess.DEVNULL,
          start_new_session=True,  # our signals reach it only as we decide (SIGTERM = checkpoint)
          pass_fds=(lock.fd,),  # the point stays locked while the trainer lives, even if we die
          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    self.tries[name] = attempt
    self.active[name] = Active(name, proc, lock, slot, time.time(), log)
    mf.set_state(self.workdir, name, "running", pid=proc.pid, host=socket.gethostname(),
                 launcher=f"local:{os.getpid()}", started=mf.now(),
                 attempts=self._recorded(name, "attempts", 0) + 1)
    print(f"[{time.strftime('%H:%M:%S')}] start   {name}", flush=True)

  def _recorded(self, name: str, key: str, default: Any) -> Any:
    m = mf.read(self.workdir) or {"runs": {}}
    return m["runs"].get(name, {}).get(key, default)

  def _finish(self, a: Active, rc: int) -> None:
    wall = time.time() - a.started
    a.log.close()
    done = mf.is_finished(self.workdir, a.name)
    a.lock.release()
    del self.active[a.name]
    total_wall = self._recorded(a.name, "wall_s", 0.0) + wall
    fields = dict(returncode=rc, finished=mf.now(), wall_s=round(total_wall, 2))
    log_path = run_dir.launch_log(self.workdir / a.name)
    if done:
      state, verb = "done", "done"
      self.sec_per_cost.append((total_wall, self.grid.costs[a.name]))
    elif rc == 0 or (self.stop_signal and rc in STOPPED_BY_US):
      state, verb = "preempted", "stopped"
      if not self.stop_signal:  # it stopped on its own: resume it, a bounded number of times
        if self.tries[a.name] < MAX_UNEXPECTED_STOPS:
          self.todo.append(a.name)
        else:
          state, verb = "failed", "failed"
          self.failed[a.name] = f"exited {MAX_UNEXPECTED_STOPS} times without {run_dir.SUMMARY}; see {log_path}"
    else:
      state, verb = "failed", "FAILED"
      if rc != cli_guard.EXIT_USER_ERROR and self.tries[a.name] <= self.args.retries and not self.stop_signal:
        state, verb = "preempted", "retry"
        self.todo.append(a.name)
      else:
        self.failed[a.name] = f"{attempts.describe_exit(rc)}: {attempts.last_error(log_path)} (log: {log_path})"
    mf.set_state(self.workdir, a.name, state, **fields)
    msg = f"[{time.strftime('%H:%M:%S')}] {verb:<7} {a.name} ({attempts.fmt_duration(wall)})"
    if a.name in self.failed:
      msg += f"\n          {self.failed[a.name]}"
    print(msg, flush=True)

  # --- the loop ---

  def _fill(self) -> None:
    for name in list(self.todo):
      if len({a.slot for a in self.active.values()}) >= self.args.parallel or self.stop_signal:
        return
      if mf.is_finished(self.workdir, name):
        self.todo.remove(name)
        self.elsewhere.discard(name)
        mf.set_state(self.workdir, name, "done")
        continue
      lock = mf.RunLock.try_acquire(self.workdir, name)
      if lock is None:
        self.elsewhere.add(name)  # another launcher runs it; we wait for it to finish or die
        continue
      self.elsewhere.discard(name)
      if mf.is_finished(self.workdir, name) or not self._may_start(name):  # finished meanwhile, or
        lock.release()  # a branch whose trunk has not reached its start yet
        continue
      self.todo.remove(name)
      if not stacks.start(self, name, lock, mf.RunLock.try_acquire, mf.is_finished):  # --stack=N|auto
        self._start(name, lock)

  def _may_start(self, name: str) -> bool:
    """A branch waits for its trunk's checkpoint, or fails if it cannot come (launch/branches.py)."""
    why = branches.never(self.grid, self.workdir, name, self.names, self.failed,
                         lambda trunk: trunk in self.active or mf.is_locked(self.workdir, trunk))
    if why:
      self.todo.remove(name)
      self.failed[name] = why
      mf.set_state(self.workdir, name, "failed")  # the status table says why
    return branches.ready(self.grid, self.workdir, name)

  def _reap(self) -> None:
    for a in list(self.active.values()):
      rc = a.proc.poll()
      if rc is not None:
        self._finish(a, rc)

  def _stop_all(self) -> None:
    """SIGTERM makes each trainer checkpoint and exit; after the grace period, SIGKILL."""
    for a in self.active.values():  # the trainer only: a compiler it runs (ptxas) must finish, not die
      _signal(a.proc, signal.SIGTERM)
    self.workers.close_idle({a.proc.pid for a in self.active.values()})
    deadline = time.time() + self.args.grace_s
    while self.active:
      self._reap()
      if self.kill_now or time.time() > deadline:
        for a in self.active.values():
          _signal(a.proc, signal.SIGKILL, group=True)
      time.sleep(0.1)

  def eta(self) -> float | None:
    if not self.sec_per_cost:
      return None
    rate = sum(w for w, _ in self.sec_per_cost) / sum(c for _, c in self.sec_per_cost)
    now = time.time()
    left = sum(self.grid.costs[n] for n in self.todo) * rate
    left += sum(max(0.0, self.grid.costs[a.name] * rate - (now - a.started)) for a in self.active.values())
    return left / self.args.parallel

  def status(self) -> str:
    names = self.names
    done = sum(mf.is_finished(self.workdir, n) for n in names)
    running = [f"{n} ({attempts.fmt_duration(time.time() - a.started)})" for n, a in self.active.items()]
    running += [f"{n} (other launcher)" for n in sorted(self.elsewhere)]
    remaining = len(names) - done - len(running) - len(self.failed)
    rows = [("done", done, ""), ("running", len(running), ", ".join(running)),
            ("failed", len(self.failed), ""), ("remaining", max(0, remaining), "")]
    lines = [f"--- {time.strftime('%H:%M:%S')} {self.grid.spec} in {self.workdir} ---"]
    lines += [f"  {k:<10}{v:>5}  {extra}".rstrip() for k, v, extra in rows]
    lines += [f"      {n}: {why}" for n, why in self.failed.items()]
    lines.append(f"  {'ETA':<10}{attempts.fmt_duration(self.eta()) if self.todo or self.active else '0s':>5}")
    return "\n".join(lines)

  def run(self) -> int:
    print(self.status(), flush=True)
    self.last_status = time.time()
    while (self.todo or self.active) and not self.stop_signal:
      self._reap()
      self._fill()
      if not (self.todo or self.active):
        break
      if time.time() - self.last_status > self.args.status_every:
        print(self.status(), flush=True)
        self.last_status = time.time()
      time.sleep(self.args.poll_s)
    if self.stop_signal:
      print(f"[{time.strftime('%H:%M:%S')}] signal {self.stop_signal}: asking {len(self.active)} "
            f"run(s) to checkpoint and stop", flush=True)
      self._stop_all()
    self.workers.close(self.args.grace_s)
    print(self.status(), flush=True)
    if self.stop_signal:
      print("interrupted; run the same command again to resume", flush=True)
      return 128 + self.stop_signal
    return 1 if self.failed else 0


def _signal(proc: subprocess.Popen, sig: int, group: bool = False) -> None:
  try:
    (os.killpg if group else os.kill)(proc.pid, sig)
  except ProcessLookupError:
    pass


def dry_run(grid: grid_lib.Grid, workdir: pathlib.Path, names: list[str], args: argparse.Namespace) -> int:
  existing = mf.read(workdir)
  mf.check_compatible(workdir, existing, grid, args.extend)
  recorded = (existing or {"runs": {}})["runs"]
  threads = cpus.check_parallel(args.parallel, len(cpus.usable_cpus()))
  env = cpus.thread_env(threads, args.parallel)
  print(f"# {len(names)} point(s) of {grid.spec} (grid hash {grid.hash}) into {workdir}; "
        f"{args.parallel} at a time, {threads} thread(s) each; nothing is run or written")
  if env:
    print("# env per run: " + " ".join(f"{k}={v!r}" for k, v in env.items()))
  for name in names:
    state = mf.observed_state(workdir, name, recorded.get(name, {}).get("state", "pending"))
    cmd = ["python", "-m", args.trainer_module, *grid.trainer_args(name, workdir)]
    print(f"{state:<9} {' '.join(cmd)}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  p = cli_guard.ArgumentParser(prog="python -m launch.local", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="grid file and argument, e.g. configs/datacons.py:scale=cpu")
  p.add_argument("--workdir", required=True, help="grid directory; each point runs in WORKDIR/<run_name>/")
  p.add_argument("--parallel", type=int, default=1, help="concurrent runs (at most the CPU cores)")
  p.add_argument("--dry_run", action="store_true", help="print each point's state and command; run nothing")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key in every point, e.g. --set data.corpus=/data/*.txt")
  p.add_argument("--only", default="", help="run only these names (comma-separated, glob patterns)")
  p.add_argument("--extend", action="store_true", help="add this grid's new points to a grid directory")
  p.add_argument("--retries", type=int, default=0, help="re-runs of a failed point (a user error never)")
  p.add_argument("--status_every", type=float, default=60.0, help="seconds between status tables")
  p.add_argument("--grace_s", type=float, default=120.0, help="seconds a stopped run gets to checkpoint")
  p.add_argument("--noreport", dest="report", action="store_false", help="skip the analysis report")
  p.add_argument("--nopin_cpus", dest="pin_cpus", action="store_false",
                 help="do not pin parallel runs to their own cores (e.g. two launchers on one machine)")
  p.add_argument("--stack", type=stacks.stack_arg, default=1, metavar="N|auto",
                 help="train up to N points of one shape as one program; auto: as many as fit in memory")
  p.add_argument("--noworkers", dest="workers", action="store_false",
                 help="one trainer process per point instead of one long-lived worker per slot")
  p.add_argument("--trainer_module", default=os.environ.get("DLMSCALE_TRAINER_MODULE", "dlmscale.main"),
                 help=argparse.SUPPRESS)
  p.add_argument("--point_fn", default=os.environ.get("DLMSCALE_POINT_FN"), help=argparse.SUPPRESS)
  p.add_argument("--report_module", default="analysis.report", help=argparse.SUPPRESS)
  p.add_argument("--poll_s", type=float, default=0.5, help=argparse.SUPPRESS)
  return p


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.point_fn is None:  # workers run the real trainer in-process; a test's fake trainer cannot
    args.point_fn = "launch.worker:train_point" if args.trainer_module == "dlmscale.main" else ""
  workdir = pathlib.Path(args.workdir).expanduser().resolve()

  def body() -> int:
    run_dir.check_not_url(args.workdir)  # before the path is resolved into a local 'gs:' folder
    grid = grid_lib.load_points(args.config, grid_lib.parse_sets(args.set))
    names = grid_lib.select_names(grid, args.only)
    if args.dry_run:
      return dry_run(grid, workdir, names, args)
    cpus.check_parallel(args.parallel, len(cpus.usable_cpus()))  # before anything is written
    run_dir.check_workdir(workdir)
    mf.init(workdir, grid, launcher="local", extend=args.extend)
    mf.refresh(workdir)
    launcher = Launcher(grid, workdir, args, names)
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, launcher.on_signal)
    rc = launcher.run()
    if rc < 128 and args.report:
      rc = max(rc, 1 if grid_report.run(workdir, args.report_module) else 0)
    return rc
  return cli_guard.cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
