"""A long-lived trainer process for launch.local: grid points in, one at a time, trained in-process.

A run of a tiny model spends more time starting a process (imports, JAX, the prepared data, the
matmul that measures the MFU peak) than training; a worker pays that once per launcher slot. With
the persistent compilation cache (dlmscale/runtime/compile_cache.py) it also loads, rather than compiles,
every program an earlier point of the same objective and shape already compiled.

Protocol (an AF_UNIX socket inherited as --fd): the launcher sends one JSON request per point,
{"name", "spec", "overrides", "workdir"}, with the point's lock file descriptor attached
(SCM_RIGHTS). The worker holds that lock while it trains, so the point stays locked even if the
launcher dies; then it replies one JSON line {"name", "rc"} with the exit status `python -m
dlmscale.main` would have had (0 done or stopped, 2 bad input, 3 diverged, 1 crashed). The
point's stdout and stderr go to its run directory's launch.log, as with a trainer process.

It exits when the launcher closes the socket (after finishing the point in hand), after a crash
(rc 1: a fresh process is safer), when a point needs another JAX CPU device count than this process
started with (rc "respawn", before the point is touched), and on SIGTERM/SIGINT: inside a point the
training loop checkpoints and stops, as a trainer process does.

  python -m launch.worker --fd=N [--point_fn=module:function]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from dlmscale import run_dir

RESPAWN = "respawn"
MAX_REQUEST = 1 << 20
EXIT_CRASHED = 1  # after this status (or RESPAWN) the worker exits: its reply says "exit": true


class Stopped(Exception):
  """SIGTERM/SIGINT outside the training loop (which takes over the signals while it runs)."""


def _on_signal(signum: int, _frame: Any) -> None:
  raise Stopped(signum)


def install_handlers() -> None:
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _on_signal)


@contextlib.contextmanager
def output_to(log: pathlib.Path) -> Iterator[None]:
  """fds 1 and 2 (Python, XLA, absl) append to `log` while the point runs."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for f in (fd, *saved):
      os.close(f)


# --- the real point function ---------------------------------------------------------------------

_configs: dict[str, Any] = {}  # spec -> the grid module's get_config(arg), loaded once


def point_config(spec: str, overrides: dict[str, Any]):
  """The config `python -m dlmscale.main --config=SPEC --config.KEY=VALUE...` would build."""
  from configs import grid as config_grid  # noqa: PLC0415 - a worker imports what its points need
  from dlmscale import config_file  # noqa: PLC0415
  if spec not in _configs:
    _configs[spec] = config_file.load_config(spec)[3]
  return config_grid.apply_overrides(_configs[spec], overrides)


def train_point(request: dict[str, Any]) -> int | str:
  """Trains one point in this process; the status `python -m dlmscale.main` would exit with."""
  from dlmscale.commands import guard  # noqa: PLC0415 - a worker imports what its points need
  from dlmscale.errors import TrainingDiverged, UserError, set_crash_dir  # noqa: PLC0415
  from dlmscale.runtime import cpu_devices  # noqa: PLC0415
  from dlmscale.train import entry  # noqa: PLC0415
  set_crash_dir(None)  # the previous point's run directory is not this one's
  try:
    config = point_config(request["spec"], request["overrides"])
    if cpu_devices.started() and cpu_devices.wanted(config) not in (None, cpu_devices.current()):
      return RESPAWN  # this process's JAX has another device count; a fresh one will take the point
    summary = entry.train(config, request["workdir"])
  except Stopped as e:
    print(f"stopped by signal {e.args[0]} before training started; re-run the same command to resume.",
          flush=True)
    raise
  except (UserError, TrainingDiverged) as e:
    return guard.expected_failure(e)
  if summary is None:
    raise Stopped(0)  # the loop checkpointed on a signal: this worker stops too
  return 0


# --- the worker's loop ------------------------------------------------------------------------------------


def load_fn(spec: str) -> Callable[[dict[str, Any]], int | str]:
  module, _, attr = spec.partition(":")
  return getattr(importlib.import_module(module), attr)


def serve(sock: socket.socket, point_fn: Callable[[dict[str, Any]], int | str]) -> int:
  """Runs points until the launcher hangs up, a point crashes or a signal arrives."""
  while True:
    try:
      msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
    except Stopped:
      return 0
    if not msg:
      return 0  # the launcher closed the socket: no more points
    request = json.loads(msg)
    lock_fd = fds[0] if fds else -1
    stop = False
    try:
      with output_to(run_dir.launch_log(request["workdir"])):
        try:
          rc = point_fn(request)
        except Stopped:
          rc, stop = 0, True
        except Exception as e:  # noqa: BLE001 - reported like a crashed trainer process
          traceback.print_exc()
          from dlmscale.commands import guard  # noqa: PLC0415
          print(f"the traceback is also in {guard.write_traceback('launch.worker', e)}", flush=True)
          rc = 1
        finally:
          install_handlers()  # the point may have replaced them
    finally:
      if lock_fd >= 0:
        os.close(lock_fd)
    leaving = stop or rc in (EXIT_CRASHED, RESPAWN)
    try:
      sock.sendall((json.dumps({"name": request["name"], "rc": rc, "exit": leaving}) + "\n").encode())
    except (BrokenPipeError, ConnectionResetError):
      return 0
    if leaving:
      return 0


# --- the launcher's end ---------------------------------------------------------------------------


class Handle:
  """One worker process and the launcher's end of its socket."""

  def __init__(self, env: dict[str, str], cwd: pathlib.Path, log: pathlib.Path, point_fn: str,
               cpus: list[int] | None):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
      self.proc = subprocess.Popen(
          [sys.executable, "-m", "launch.worker", f"--fd={theirs.fileno()}", f"--point_fn={point_fn}"],
          cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
          start_new_session=True,  # our signals reach it only as we decide (SIGTERM = checkpoint)
          pass_fds=(theirs.fileno(),),
          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    theirs.close()
    ours.setblocking(False)
    self.sock, self._buf, self.leaving = ours, b"", False

  @property
  def pid(self) -> int:
    return self.proc.pid

  def usable(self) -> bool:
    return not self.leaving and self.proc.poll() is None

  def send(self, request: dict[str, Any], lock_fd: int) -> bool:
    """Hands a point (and its lock) over; False when the worker is gone."""
    try:
      socket.send_fds(self.sock, [json.dumps(request).encode()], [lock_fd])
      return True
    except OSError:
      self.leaving = True
      return False

  def reply(self) -> dict[str, Any] | None:
    """The worker's answer to the point in hand, once it has come."""
    try:
      while b"\n" not in self._buf:
        chunk = self.sock.recv(65536)
        if not chunk:
          break
        self._buf += chunk
    except OSError:  # BlockingIOError included: nothing more has come yet
      pass
    if b"\n" not in self._buf:
      return None
    line, self._buf = self._buf.split(b"\n", 1)
    answer = json.loads(line)
    self.leaving = self.leaving or bool(answer.get("exit"))
    return answer

  def close(self) -> None:
    """No more points: the worker exits once the point in hand (if any) is done."""
    self.leaving = True
    if self.sock.fileno() >= 0:
      self.sock.close()


class Job:
  """A point trained by a worker, with the interface launch.local uses for a trainer process."""

  def __init__(self, spawn: Callable[[], Handle], handle: Handle, request: dict[str, Any], lock_fd: int):
    self.spawn, self.request, self.lock_fd = spawn, request, lock_fd
    self.handle = handle
    self.returncode: int | None = None
    self._hand_over()

  @property
  def pid(self) -> int:
    return self.handle.pid

  def _hand_over(self) -> None:
    for _ in range(2):  # a worker that left between our check and the send: one fresh try
      if self.handle.usable() and self.handle.send(self.request, self.lock_fd):
        return
      self.handle = self.spawn()
    self.handle.send(self.request, self.lock_fd)

  def poll(self) -> int | None:
    """The point's exit status (as a trainer process would have it) once it is settled."""
    if self.returncode is not None:
      return self.returncode
    answer = self.handle.reply()
    if answer is None:
      died = self.handle.proc.poll()
      if died is None:
        return None
      answer = self.handle.reply() or {"rc": died}  # died without answering: its own status
    if answer["rc"] == RESPAWN:
      self.handle.proc.wait()
      self.handle = self.spawn()
      self.handle.send(self.request, self.lock_fd)
      return None
    self.returncode = int(answer["rc"])
    return self.returncode


class Pool:
  """The launcher's workers, one per slot, each started when its slot first gets a point."""

  def __init__(self, start: Callable[[int], Handle]):
    self._start, self.handles = start, {}

  def spawn(self, slot: int) -> Handle:
    self.handles[slot] = self._start(slot)
    return self.handles[slot]

  def job(self, slot: int, request: dict[str, Any], lock_fd: int) -> Job:
    handle = self.handles.get(slot)
    if handle is None or not handle.usable():
      handle = self.spawn(slot)
    return Job(lambda: self.spawn(slot), handle, request, lock_fd)

  def close_idle(self, busy_pids: set[int]) -> None:
    """Stopping: the idle workers go now (the busy ones checkpoint and reply first)."""
    for h in self.handles.values():
      if h.pid not in busy_pids:
        h.close()

  def close(self, grace_s: float) -> None:
    """Idle workers exit when their socket closes; wait, so that none outlives the launcher."""
    for h in self.handles.values():
      h.close()
    for h in self.handles.values():
      try:
        h.proc.wait(timeout=grace_s)
      except subprocess.TimeoutExpired:
        os.killpg(h.pid, signal.SIGKILL)
        h.proc.wait()
    self.handles.clear()


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.worker", description=__doc__.split("\n")[0])
  p.add_argument("--fd", type=int, required=True, help="the launcher's socket (inherited)")
  p.add_argument("--point_fn", default="launch.worker:train_point", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  install_handlers()
  sock = socket.socket(fileno=args.fd)
  try:
    return serve(sock, load_fn(args.point_fn))
  finally:
    sock.close()


if __name__ == "__main__":
  # Run as launch.worker, not as __main__: point functions import launch.worker, and its Stopped must
  # be the class serve() catches (a second copy of the module would make a clean stop a crash).
  from launch import worker as _worker  # pylint: disable=import-self
  sys.exit(_worker.main())
