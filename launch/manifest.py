"""The grid directory's record: `grid_manifest.json` (which points exist, their state and config
hash) and the per-run locks that keep two launchers from running one point twice.

Layout of a grid directory DIR:
  DIR/grid_manifest.json     {"version", "grid": {"config", "hash", "n_points"}, "created", "updated",
                              "runs": {run_name: {"overrides", "config_hash", "cost", "state",
                              "in_grid", "attempts", "returncode", "log", "wall_s", "host", "pid",
                              "launcher", "started", "finished", "role"?, "trunk"?}}}
                             (role: "trunk" or "branch" for WSD trunks and their cooldown branches;
                             a branch's "trunk" names its trunk: launch/branches.py)
  DIR/<run_name>/            the trainer's run directory (its summary once finished: dlmscale/run_dir.py)
  DIR/<run_name>/launch.log  the local launcher's log of every attempt
  DIR/.locks/<run_name>.lock flock()ed while a process runs the point; the kernel frees it when that
                             process dies, so a crashed launcher never leaves a stale lock.

The truth about a point is on disk: finished iff the run's summary exists, running iff its lock is held.
The recorded `state` (pending|running|done|failed|preempted) is what the last launcher saw.

CLI: `python -m launch.manifest --workdir=DIR` prints the grid's status; `--init=configs/F.py:ARGS`
creates or checks the manifest and `--mark NAME=STATE[:RETURNCODE]` records a state (the SLURM and
TPU launchers call these on the machines that hold the grid directory).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys
from typing import Any, Callable, Iterator

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from dlmscale.errors import UserError
from launch import branches, grids as grid_lib
from launch.grids import Grid

MANIFEST = "grid_manifest.json"
LOCKS = ".locks"
STATES = ("pending", "running", "done", "failed", "preempted")


def now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


def is_finished(workdir: pathlib.Path, name: str) -> bool:
  return run_dir.is_finished(workdir / name)


# --- Per-run locks ------------------------------------------------------------------------------


class RunLock:
  """An exclusive flock on DIR/.locks/NAME.lock. Pass `fd` to the child (pass_fds) so the lock
  lives as long as the trainer does, even when the launcher that took it is killed."""

  def __init__(self, fd: int):
    self.fd = fd

  @classmethod
  def try_acquire(cls, workdir: pathlib.Path, name: str) -> RunLock | None:
    (workdir / LOCKS).mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCKS / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()} {now()}\n".encode())
    return cls(fd)

  def release(self) -> None:
    if self.fd >= 0:
      os.close(self.fd)  # our child, if alive, still holds its inherited copy
      self.fd = -1


def is_locked(workdir: pathlib.Path, name: str) -> bool:
  """True when another process (or another launcher in this one) holds the point's lock."""
  if not (workdir / LOCKS / f"{name}.lock").exists():
    return False
  lock = RunLock.try_acquire(workdir, name)
  if lock is None:
    return True
  lock.release()
  return False


# --- The manifest -------------------------------------------------------------------------------


@contextlib.contextmanager
def _manifest_lock(workdir: pathlib.Path) -> Iterator[None]:
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / f".{MANIFEST}.lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read(workdir: pathlib.Path) -> dict[str, Any] | None:
  path = workdir / MANIFEST
  if not path.exists():
    return None
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e}); restore it or move it away to rebuild it") from None
  if not isinstance(manifest, dict) or not {"grid", "runs"} <= manifest.keys():
    raise UserError(f"{path} is not a grid manifest of this version (no 'grid' and 'runs'); move it away "
                    "and re-launch to rebuild it from the run directories")
  return manifest


def _write(workdir: pathlib.Path, manifest: dict[str, Any]) -> None:
  manifest["updated"] = now()
  tmp = workdir / f".{MANIFEST}.tmp"
  tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
  os.replace(tmp, workdir / MANIFEST)


def update(workdir: pathlib.Path, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
  """Read-modify-write under the manifest lock, so concurrent launchers never lose an update."""
  with _manifest_lock(workdir):
    manifest = read(workdir)
    if manifest is None:
      raise UserError(f"{workdir} has no {MANIFEST}; launch the grid there first")
    fn(manifest)
    _write(workdir, manifest)
    return manifest


def set_state(workdir: pathlib.Path, name: str, state: str, **fields: Any) -> None:
  if state not in STATES:
    raise UserError(f"unknown state {state!r}; choose one of {', '.join(STATES)}")

  def fn(m: dict[str, Any]) -> None:
    if name not in m["runs"]:
      raise UserError(f"{name!r} is not a point of the grid in {workdir}")
    m["runs"][name].update(state=state, **fields)
  update(workdir, fn)


def _new_entry(grid: Grid, name: str) -> dict[str, Any]:
  return {"overrides": grid.points[name], "config_hash": grid.hashes[name], "cost": grid.costs[name],
          "state": "pending", "in_grid": True, "attempts": 0, "returncode": None,
          "log": f"{name}/launch.log", "wall_s": 0.0}


def check_compatible(workdir: pathlib.Path, existing: dict[str, Any] | None, grid: Grid,
                     extend: bool) -> None:
  """A grid directory holds one grid. Raises before anything is written when this launch differs."""
  if existing is None or existing["grid"]["hash"] == grid.hash:
    return
  old = {n: p["config_hash"] for n, p in existing["runs"].items() if p.get("in_grid", True)}
  changed = [n for n in grid.hashes if n in old and old[n] != grid.hashes[n]]
  added = [n for n in grid.hashes if n not in old]
  removed = [n for n in old if n not in grid.hashes]
  was = existing["grid"]
  head = (f"{workdir} was launched with another grid ({was['config']}, {was['n_points']} points, "
          f"config hash {was['hash']}); this launch is {grid.spec} ({len(grid.points)} points, "
          f"hash {grid.hash}).")
  if changed:
    raise UserError(
        f"{head} {len(changed)} point(s) keep their run name but change their config (e.g. "
        f"{changed[0]}), so their run directories hold a different run. Nothing was changed; use a "
        "new --workdir for this grid.")
  if not extend:
    raise UserError(
        f"{head} It adds {len(added)} and drops {len(removed)} point(s). Nothing was changed; use a new "
        "--workdir for a different grid, or pass --extend to add this launch's points to the "
        "directory (existing runs and their results are kept).")


def init(workdir: pathlib.Path, grid: Grid, launcher: str, extend: bool = False) -> dict[str, Any]:
  """Creates the manifest or merges this grid into it (see check_compatible)."""
  with _manifest_lock(workdir):
    manifest = read(workdir)
    check_compatible(workdir, manifest, grid, extend)
    if manifest is None:
      manifest = {"version": 1, "created": now(), "runs": {}}
    manifest["grid"] = {"config": grid.spec, "hash": grid.hash, "n_points": len(grid.points)}
    manifest["launcher"] = launcher
    points = manifest["runs"]
    for name, entry in points.items():
      entry["in_grid"] = name in grid.points
    relations = branches.relations(grid)
    for name in grid.points:
      if name not in points:
        points[name] = _new_entry(grid, name)
      points[name].update(relations.get(name, {}))
      if is_finished(workdir, name):
        points[name]["state"] = "done"
    _write(workdir, manifest)
    return manifest


def observed_state(workdir: pathlib.Path, name: str, recorded: str) -> str:
  """State from the disk, which outranks what a (possibly killed) launcher last wrote."""
  if is_finished(workdir, name):
    return "done"
  if is_locked(workdir, name):
    return "running"
  if recorded in ("running", "done"):
    return "preempted"  # its launcher died mid-run, or the run dir was cleaned: resumable
  return recorded


def refresh(workdir: pathlib.Path) -> dict[str, Any]:
  def fn(m: dict[str, Any]) -> None:
    for name, entry in m["runs"].items():
      entry["state"] = observed_state(workdir, name, entry["state"])
  return update(workdir, fn)


def status_lines(workdir: pathlib.Path, manifest: dict[str, Any]) -> list[str]:
  """Counts per state, with the names of running and failed points (and failed logs)."""
  points = {n: p for n, p in manifest["runs"].items() if p.get("in_grid", True)}
  by_state: dict[str, list[str]] = {s: [] for s in STATES}
  for name, p in points.items():
    by_state[p["state"]].append(name)
  g = manifest["grid"]
  lines = [f"grid {g['config']} ({g['n_points']} points, hash {g['hash']}) in {workdir}"]
  for state in ("done", "running", "failed", "preempted", "pending"):
    names = by_state[state]
    extra = ""
    if state == "running" and names:
      extra = "  " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
    lines.append(f"  {state:<10}{len(names):>5}{extra}")
    if state == "failed":
      lines += [f"      {n}: see {workdir / points[n]['log']}" for n in names]
  return lines + trunk_lines(points)


def trunk_lines(points: dict[str, Any]) -> list[str]:
  """Each WSD trunk with its branches and their states (none for a grid without trunks)."""
  lines = []
  for trunk, p in points.items():
    if p.get("role") == "trunk":
      kids = [f"{n} ({q['state']})" for n, q in points.items() if q.get("trunk") == trunk]
      lines.append(f"  trunk {trunk} ({p['state']}) -> {len(kids)} branch(es): {', '.join(kids)}")
  return lines


def main(argv: list[str] | None = None) -> int:
  p = cli_guard.ArgumentParser(prog="python -m launch.manifest", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="grid directory holding grid_manifest.json")
  p.add_argument("--init", default="", metavar="configs/FILE.py[:ARGS]",
                 help="create (or check) the manifest for this grid; launchers on other machines use it")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --init: as launch.local")
  p.add_argument("--extend", action="store_true", help="with --init: as launch.local")
  p.add_argument("--mark", action="append", default=[], metavar="NAME=STATE[:RC]",
                 help="record a point's state (the SLURM and TPU scripts call this)")
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir)

  def body() -> int:
    if args.init:
      grid = grid_lib.load_points(args.init, grid_lib.parse_sets(args.set))
      init(workdir, grid, "remote", args.extend)
    for item in args.mark:
      name, sep, value = item.partition("=")
      state, _, rc = value.partition(":")
      if not sep:
        raise UserError(f"--mark {item!r}: expected NAME=STATE[:RETURNCODE]")
      fields: dict[str, Any] = {"host": socket.gethostname(),
                                ("started" if state == "running" else "finished"): now()}
      if rc:
        fields["returncode"] = int(rc)
      if state == "running":
        fields["attempts"] = (read(workdir) or {"runs": {}})["runs"].get(name, {}).get("attempts", 0) + 1
      set_state(workdir, name, state, **fields)
    if not args.mark:
      print("\n".join(status_lines(workdir, refresh(workdir))))
    return 0
  return cli_guard.cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
