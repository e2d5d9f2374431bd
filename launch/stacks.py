"""Stacks in a grid: which points share a compiled shape, and launch.local's start of one stack.

Points whose configs differ only in steps.RUN_KEYS (seed, lr, warmup, U, epochs, cadences, a WSD
trunk's branch starts, a branch's trunk and start step) build one program (train/stack_program.py
shape_key), so `--stack=N` groups them, in grid order, into stacks of at most N, each trained by one
`python -m launch.train_stack` process (train/stack.py). `--stack=auto` hands up to AUTO_CAP points
of one shape to one stack process, which trains as many per stack as fit the device's memory
(train/stack_fit.py) and the rest in further stacks, one after another. WSD trunks stack with
trunks and branches with branches, never a trunk with a branch (a branch waits on its trunk's checkpoint, which a stack
holding both could not give it): each trunk member saves and keeps its own branch starts' checkpoints
as its solo run does, and a branch joins a stack only once its trunk's checkpoint exists
(launch/branches.py ready), each member starting from its own trunk's step. Each member keeps its own
lock, launch log, manifest entry and exit status: the stack writes every member's outcome to a
result file, and a member's status is read from there (its `error:` line goes to its own launch log),
so a diverged member fails (exit 3) while the others are done.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Callable

from dlmscale import run_dir
from dlmscale.train import stack_program
from launch import branches
from launch.grids import REPO_ROOT, Grid

STACK_LOGS = ".stacks"  # DIR/.stacks/<first member>.log and .json: a stack's output and outcomes
AUTO = "auto"
AUTO_CAP = 64  # --stack=auto: candidates handed to one stack process, which splits what does not fit


def stack_arg(value: str) -> int | str:
  """--stack's value: a number of points per stack (1: no stacks), or 'auto': as many as fit the
  device's memory, decided by the stack process (dlmscale/train/stack_fit.py)."""
  if value.strip().lower() == AUTO:
    return AUTO
  try:
    n = int(value)
  except ValueError:
    n = 0
  if n < 1:
    raise argparse.ArgumentTypeError(f"{value!r} is neither a number of points per stack (1 or more) "
                                     f"nor {AUTO} (as many as fit the device's memory)")
  return n


def cap(stack: int | str) -> int:
  """The most points one stack process is given: --stack=N's N, or AUTO_CAP for auto."""
  return AUTO_CAP if stack == AUTO else int(stack)


def key(grid: Grid, name: str) -> str:
  """Points with equal keys may share a stack: the compiled shape, and for a WSD trunk or branch
  its role, so trunks stack only with trunks and branches only with branches."""
  config = grid.configs[name]
  role = branches.role(config)
  return (f"{role}:" if role else "") + stack_program.shape_key(config)


def groups(grid: Grid, names: list[str], size: int) -> list[list[str]]:
  """`names` grouped by shape (first appearance order), each group cut into stacks of <= size;
  branches' stacks after every other stack, so one stack after another trains trunks before the
  branches that start from their checkpoints."""
  by_key: dict[str, list[str]] = {}
  for n in names:
    by_key.setdefault(key(grid, n), []).append(n)
  ordered = sorted(by_key.values(), key=lambda g: branches.role(grid.configs[g[0]]) == "branch")
  return [g[i:i + max(size, 1)] for g in ordered for i in range(0, len(g), max(size, 1))]


class Member:
  """One member's view of a stack process, as launch.local sees a trainer: .pid and .poll()."""

  def __init__(self, proc: subprocess.Popen, name: str, result: pathlib.Path, log: pathlib.Path):
    self.proc, self.name, self.result, self.log = proc, name, result, log
    self.returncode: int | None = None

  @property
  def pid(self) -> int:
    return self.proc.pid

  def poll(self) -> int | None:
    if self.returncode is not None:
      return self.returncode
    rc = self.proc.poll()
    if rc is None:
      return None
    try:
      outcome = json.loads(self.result.read_text()).get(self.name)
    except (OSError, ValueError):
      outcome = None
    if outcome is None:  # killed or crashed before writing outcomes: the process's own status
      self.returncode = rc
      return rc
    if outcome.get("error"):
      with open(self.log, "a") as f:
        f.write(f"error: {outcome['error']}\n")
    self.returncode = int(outcome["rc"])
    return self.returncode


def command(grid: Grid, workdir: pathlib.Path, names: list[str], sets: list[str],
            result: pathlib.Path, stack: int | str) -> list[str]:
  """The stack process's command: --stack=auto passes through (it may split `names` into stacks
  that fit), a number becomes the stack's own size."""
  size = AUTO if stack == AUTO else len(names)
  return [sys.executable, "-m", "launch.train_stack", f"--config={grid.spec}", f"--workdir={workdir}",
          f"--only={','.join(names)}", f"--stack={size}", f"--result_json={result}",
          *[f"--set={s}" for s in sets]]


def mates(launcher: Any, name: str, acquire: Callable, finished: Callable) -> list[tuple[str, Any]]:
  """Up to --stack - 1 (auto: AUTO_CAP - 1) further points of `name`'s shape from the launcher's
  to-do list, locked (acquire and finished: launch/manifest.py's RunLock.try_acquire and
  is_finished); a branch only once its trunk's checkpoint exists (it would fail the whole stack's
  start otherwise)."""
  k, out = key(launcher.grid, name), []
  for other in list(launcher.todo):
    if len(out) + 1 >= cap(launcher.args.stack):
      break
    if (key(launcher.grid, other) != k or finished(launcher.workdir, other)
        or not branches.ready(launcher.grid, launcher.workdir, other)):
      continue
    lock = acquire(launcher.workdir, other)
    if lock is None:
      continue
    if finished(launcher.workdir, other):
      lock.release()
      continue
    launcher.todo.remove(other)
    out.append((other, lock))
  return out


def start(launcher: Any, name: str, lock: Any, acquire: Callable, finished: Callable) -> bool:
  """Starts `name` with the mates it can lock as one stack process; False (nothing done) when it
  has none, so the launcher starts it solo."""
  if cap(launcher.args.stack) <= 1:
    return False
  members = [(name, lock), *mates(launcher, name, acquire, finished)]
  if len(members) == 1:
    return False
  names = [n for n, _ in members]
  logs = launcher.workdir / STACK_LOGS
  logs.mkdir(parents=True, exist_ok=True)
  result = logs / f"{name}.json"
  result.unlink(missing_ok=True)
  cmd = command(launcher.grid, launcher.workdir, names, launcher.args.set, result, launcher.args.stack)
  slot = min(set(range(launcher.args.parallel)) - {a.slot for a in launcher.active.values()})
  cpus = launcher._pinned(slot)  # noqa: SLF001 - the launcher's own slot layout
  with open(logs / f"{name}.log", "a") as out:
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=launcher._env(), stdout=out,  # noqa: SLF001
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            pass_fds=tuple(l.fd for _, l in members),
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
  for n, l in members:
    view = Member(proc, n, result, run_dir.launch_log(launcher.workdir / n))
    launcher._start(n, l, proc=view, slot=slot, cmd=cmd + [f"# output: {logs / (name + '.log')}"])  # noqa: SLF001
  return True
