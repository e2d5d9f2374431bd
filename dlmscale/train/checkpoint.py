"""Orbax checkpoints of the train state and the data iterator, saved together so they never disagree.

Orbax writes each step to a temporary directory and renames it when complete, so a kill mid-save
leaves the previous checkpoint as the latest. Once a save is complete, the sha256 of every file in
it is written to `<step>/checksums.json`; a restore verifies them first, so a flipped or zeroed
byte in the array data is caught instead of trained on. A checkpoint that fails the check or that
orbax cannot read is reported in one line (the traceback goes to checkpoint_errors.log beside
checkpoints/), skipped in favour of the one before, and, in the trainer, moved aside to
`unreadable-<step>` so that rotation can never delete a good checkpoint to keep a broken one.
Nothing is deleted.

A save that finds the disk full (or the quota spent) is a UserError naming the disk and the newest
complete checkpoint, which stays the restore point: orbax only renames a step into place once all
of it is written, and a re-run removes the unfinished temporary directory.

Orbax's background work is settled before a failure is reported (orbax_quiet.py), so a failed
read or write is one line, by us, and nothing reaches the terminal after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import time
import traceback
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from dlmscale import run_dir
from dlmscale.train import orbax_quiet
from dlmscale.data import chunks
from dlmscale.errors import UserError, disk_full_line, first_line, no_space

CHECKSUMS = "checksums.json"
ERROR_LOG = run_dir.CHECKPOINT_ERRORS
UNREADABLE_PREFIX = "unreadable-"


class Restored(NamedTuple):
  step: int
  state: Any
  data_state: dict
  meta: dict


_file_sha256 = chunks.file_sha256  # one streamed sha256 for prepared data and checkpoints


def file_checksums(step_dir: pathlib.Path) -> dict[str, str]:
  """sha256 of every file of a complete checkpoint, by path relative to its step directory."""
  return {str(p.relative_to(step_dir)): _file_sha256(p) for p in sorted(step_dir.rglob("*"))
          if p.is_file() and p.name != CHECKSUMS}


def write_checksums(step_dir: pathlib.Path) -> None:
  tmp = step_dir / (CHECKSUMS + ".tmp")
  tmp.write_text(json.dumps(file_checksums(step_dir), indent=1, sort_keys=True) + "\n")
  os.replace(tmp, step_dir / CHECKSUMS)


def verify(step_dir: pathlib.Path) -> str | None:
  """Why a checkpoint's files do not match its checksums, or None (also when it has none: a
  checkpoint from before checksums, or one killed between its save and its checksums)."""
  path = step_dir / CHECKSUMS
  if not path.exists():
    return None
  try:
    expected = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError):
    return f"{CHECKSUMS} is damaged"
  for rel, sha in sorted(expected.items()):
    f = step_dir / rel
    if not f.is_file():
      return f"{rel} is missing"
    if _file_sha256(f) != sha:
      return f"{rel} does not match its sha256 (the array data changed after it was saved)"
  return None


class Checkpointer:
  def __init__(self, directory: pathlib.Path, keep: int, set_aside_unreadable: bool = False,
               protect: tuple[int, ...] = ()):
    """`protect`: steps kept beside the newest `keep` (a WSD trunk's branch starts)."""
    orbax_quiet.settle_orbax_loops()
    self._log_filter = orbax_quiet.OrbaxLogToFile(directory.parent / ERROR_LOG)
    logging.getLogger("absl").addFilter(self._log_filter)
    if protect:
      policy = ocp.checkpoint_managers.AnyPreservationPolicy([
          ocp.checkpoint_managers.LatestN(max(int(keep), 1)),
          ocp.checkpoint_managers.CustomSteps(sorted(protect))])
      options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
    self._mgr = ocp.CheckpointManager(directory.resolve(), options=options,
                                      item_names=("state", "data", "meta"))
    self.directory = directory
    self._set_aside = set_aside_unreadable and jax.process_index() == 0
    self._unsealed: list[int] = []  # saved (maybe still in flight), no checksums yet

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    if step in self._mgr.all_steps():
      return
    self._seal()  # orbax would wait for the previous save here anyway
    with self._disk_full_is_a_user_error([step]):
      try:
        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)), force=True)
      except Exception:
        orbax_quiet.join_orbax_threads()  # what of the save had started ends before the failure is reported
        raise
    self._unsealed.append(step)

  def _seal(self) -> None:
    """Waits for saves in flight, then writes the checksums of each finished one (process 0)."""
    unsealed, self._unsealed = self._unsealed, []
    with self._disk_full_is_a_user_error(unsealed):
      try:
        self._mgr.wait_until_finished()
      except Exception:
        orbax_quiet.join_orbax_threads()  # the rest of the failed save ends (and logs) before we report it
        raise
      if jax.process_index() == 0:
        for step in unsealed:
          step_dir = self.directory / str(step)
          if step_dir.is_dir():  # rotation may have removed it already
            write_checksums(step_dir)

  @contextlib.contextmanager
  def _disk_full_is_a_user_error(self, steps: list[int]):
    try:
      yield
    except Exception as e:
      if not no_space(e):
        raise
      complete = [s for s in saved_steps(self.directory) if s not in steps]
      kept = f"step {complete[-1]}" if complete else "none (the run starts from scratch)"
      raise UserError(disk_full_line(self.directory, f"checkpoint step {', '.join(map(str, steps))} "
                                     f"was not saved; the newest complete checkpoint, where the run "
                                     f"continues, is {kept}")) from None

  def wait(self) -> None:
    self._seal()

  def restore_latest(self, abstract_state: Any) -> Restored | None:
    """The newest checkpoint that verifies and reads, or None when there is none at all."""
    steps = self.steps()
    skipped = False
    for step in reversed(steps):
      got = self._read(step, abstract_state)
      if isinstance(got, Restored):
        if skipped and self._set_aside:
          self._mgr.reload()
        return got
      why, skipped = got, True
      where = self._move_aside(step)
      print(f"warning: checkpoint step {step} in {self.directory} is unreadable: {why}; "
            f"falling back to the previous one{where} (details: {self.directory.parent / ERROR_LOG})",
            flush=True)
    if skipped and self._set_aside:
      self._mgr.reload()
    if steps:
      raise UserError(
          f"none of the checkpoints in {self.directory} (steps {steps}) can be read (see "
          f"{self.directory.parent / ERROR_LOG}). Move that directory aside to start the run from "
          "scratch; nothing was deleted.")
    return None

  def restore_step(self, step: int, abstract_state: Any) -> Restored:
    """Exactly checkpoint `step`, with no fallback: a run asked for at a step is read at that step."""
    steps = self.steps()
    if step not in steps:
      raise UserError(f"{self.directory} has no checkpoint at step {step} (it has steps {steps})")
    got = self._read(step, abstract_state)
    if isinstance(got, Restored):
      return got
    raise UserError(f"checkpoint step {step} in {self.directory} is unreadable: {got} (details: "
                    f"{self.directory.parent / ERROR_LOG}); choose another step")

  def _read(self, step: int, abstract_state: Any) -> Restored | str:
    """Checkpoint `step` if it verifies and orbax reads it, else why not, in one line (logged, with
    orbax's traceback, in the run's error log): the one read both restore paths make."""
    why, trace = verify(self.directory / str(step)), ""
    if why is None:
      try:
        out = self._restore(step, abstract_state)
        return Restored(step, out["state"], dict(out["data"]), dict(out["meta"]))
      except Exception as e:  # noqa: BLE001 - any failure to read is reported, not raised
        why = f"orbax cannot read it ({type(e).__name__}: {first_line(e)[:160]})"
        trace = traceback.format_exc()
    self._log(step, why, trace)
    return why

  def _restore(self, step: int, abstract_state: Any) -> dict:
    quiet = [logging.getLogger(n) for n in ("absl", "orbax", "")]
    levels = [l.level for l in quiet]
    for l in quiet:  # orbax logs each failed read coroutine's traceback: those go to our log file
      l.setLevel(logging.CRITICAL)
    try:
      return self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore()))
    finally:
      for l, level in zip(quiet, levels):
        l.setLevel(level)

  def _log(self, step: int, why: str, trace: str) -> None:
    try:
      with open(self.directory.parent / ERROR_LOG, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} step {step}: {why}\n{trace}\n")
    except OSError:  # a read-only run directory: the one-line warning still says what happened
      pass

  def _move_aside(self, step: int) -> str:
    """Renames an unreadable step out of orbax's sight (kept, never deleted); says where."""
    if not self._set_aside:
      return ""
    src = self.directory / str(step)
    dst = self.directory / f"{UNREADABLE_PREFIX}{step}"
    n = 1
    while dst.exists():
      n += 1
      dst = self.directory / f"{UNREADABLE_PREFIX}{step}.{n}"
    os.rename(src, dst)
    return f"; it is kept as {dst}"

  def close(self) -> None:
    try:
      self._seal()
      self._mgr.close()
    finally:
      orbax_quiet.join_orbax_threads()  # none of orbax's threads can log after its records stop going to the file
      logging.getLogger("absl").removeFilter(self._log_filter)


def saved_steps(directory: pathlib.Path) -> list[int]:
  """The step directories, ascending (unreadable-<step> ones are set aside, not steps)."""
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def latest_step(directory: pathlib.Path) -> int | None:
  steps = saved_steps(directory)
  return steps[-1] if steps else None


def load_arrays(directory: pathlib.Path, step: int | None = None) -> dict:
  """A saved train state as host arrays on one device, with no model or config needed to read it."""
  step = latest_step(directory) if step is None else step
  if step is None:
    raise UserError(f"no checkpoint in {directory}; train the run first (or check the --workdir)")
  path = (directory / str(step) / "state").resolve()
  reader = ocp.StandardCheckpointer()
  meta = reader.metadata(path)
  tree = getattr(meta, "item_metadata", meta)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return jax.device_get(reader.restore(path, abstract))
