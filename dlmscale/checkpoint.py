"""Orbax checkpoints of the train state and the data iterator, saved together so they never disagree.

Orbax writes each step to a temporary directory and renames it when complete, so a kill mid-save
leaves the previous checkpoint as the latest. A checkpoint that is complete but unreadable (a bad
disk, a truncated file) is reported and skipped in favour of the one before; it is never deleted.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from dlmscale.errors import UserError


class Restored(NamedTuple):
  step: int
  state: Any
  data_state: dict
  meta: dict


class Checkpointer:
  def __init__(self, directory: pathlib.Path, keep: int):
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
    self._mgr = ocp.CheckpointManager(directory.resolve(), options=options,
                                      item_names=("state", "data", "meta"))
    self.directory = directory

  def steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    if step in self._mgr.all_steps():
      return
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def restore_latest(self, abstract_state: Any) -> Restored | None:
    """The newest readable checkpoint, or None when there is none at all."""
    steps = self.steps()
    for step in reversed(steps):
      try:
        out = self._mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return Restored(step, out["state"], dict(out["data"]), dict(out["meta"]))
      except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
                        step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
        print(f"warning: checkpoint step {step} is unreadable ({type(e).__name__}); "
              "falling back to the previous one", flush=True)
    if steps:
      raise UserError(
          f"none of the checkpoints in {self.directory} (steps {steps}) can be read. Move that "
          "directory aside to start the run from scratch; nothing was deleted.")
    return None

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, so restore places shards directly."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def latest_step(directory: pathlib.Path) -> int | None:
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []
  return max(steps) if steps else None


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
