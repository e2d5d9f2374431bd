"""The one restore path: a run's config and workdir -> data, steps, mesh, program, restored state.

`open_run` serves the trainer (a fresh start or a resume), the evaluator and the sampler, so they
all see the same data, the same program and the same checkpoint: data preparation (one pass,
data/pipeline.py `for_run`) -> the run's steps -> mesh and program (program.py) -> the newest
readable checkpoint or a requested one (checkpoint.py) -> the check that the checkpoint was trained
on this data. The trainer's mesh is the config's; for inference it is the run's mesh when that
tiles the devices present, else pure data parallelism over all of them, so a run trained on a
cluster can be evaluated on a laptop.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from dlmscale.train import checkpoint
from dlmscale.train import timer as phases
from dlmscale.train import steps as program
from dlmscale import run_dir as rundir
from dlmscale.runtime import sharding
from dlmscale.model import transformer as model_lib
from dlmscale.data import pipeline
from dlmscale.errors import UserError


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """A run opened at one step: for inference its params; for training the state to continue from."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  data: pipeline.RunData
  setup: program.Setup
  state: program.TrainState  # for inference without opt_state (params are all it reads)
  step: int  # the restored step; 0 for a fresh start
  meta: dict  # the checkpoint's record (wall time, metric window, data hashes); {} for a fresh start
  checkpointer: checkpoint.Checkpointer | None = None  # training only: open, to save into

  @property
  def prepared(self) -> pipeline.Prepared:
    return self.data.prepared

  @property
  def total_steps(self) -> int:
    return self.data.total_steps

  @property
  def params(self) -> Any:
    return self.state.params

  @property
  def apply_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """(params, tokens_BxL) -> logits_BxLxV: the model as the run's program applies it."""
    return self.setup.apply_fn

  @property
  def mesh(self) -> Mesh:
    return self.setup.mesh

  @property
  def model_cfg(self) -> model_lib.ModelConfig:
    return self.setup.model_cfg

  def put(self, local_B: np.ndarray) -> jax.Array:
    """A host batch split over the data-parallel devices (rows must divide their count)."""
    return sharding.host_batch_to_global(np.asarray(local_B), self.setup.batch_sharding)


def read_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise UserError(f"--workdir {workdir} does not exist; give the directory of a training run")
  path = workdir / "config.json"
  if not path.is_file():
    raise UserError(f"{workdir} holds no config.json, so it is not a run directory; give the --workdir "
                    "that python -m dlmscale.main trained")
  try:
    stored = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
  except UnicodeDecodeError:
    raise UserError(f"{path} is not text (damaged?); restore it from a copy") from None
  if not isinstance(stored, dict):
    raise UserError(f"{path} holds no config object; restore it from a copy")
  return ml_collections.ConfigDict(rundir.with_legacy_defaults(rundir.config_without_records(stored)))


def data_differences(meta: dict, prepared: pipeline.Prepared) -> list[str]:
  """What of the prepared data (train, val, tokenizer) differs from a checkpoint's record of its data:
  the one comparison the trainer's resume and the evaluator's load both make."""
  saved = dict(meta.get("data_sha256") or {})
  saved.setdefault("tokenizer", meta.get("tokenizer_sha256"))
  return rundir.data_differences({k: v for k, v in saved.items() if v}, prepared.sha256s())


def check_data(meta: dict, prepared: pipeline.Prepared, *, training: bool, allow_new_data: bool) -> None:
  """Training continues only on the data it was trained on (unless allowed); inference needs only
  the same tokenizer, since it may read the run on a differently split corpus."""
  diffs = data_differences(meta, prepared)
  if training and diffs and not allow_new_data:
    raise UserError(
        f"the checkpoint was trained on other data than is prepared in {prepared.root} "
        f"({'; '.join(diffs)}). Resume with the same data (same corpus, data.* settings and Python "
        "version), pass --allow_new_data to continue on this data, or start a new --workdir.")
  tokenizer = [d for d in diffs if d.startswith("tokenizer")]
  if not training and tokenizer:
    raise UserError(f"the checkpoint's tokenizer differs from the prepared data's in {prepared.root} "
                    f"({tokenizer[0]}); use the same data settings as the checkpoint's run, or start a new run")


def _mesh(config: ml_collections.ConfigDict, training: bool) -> Mesh:
  """The config's mesh; for inference, data parallelism over all devices when it does not tile them."""
  try:
    return sharding.make_mesh(config.mesh)
  except UserError:
    if training:
      raise
    return sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))


def _build(config: ml_collections.ConfigDict, training: bool,
           clock: phases.PhaseClock) -> tuple[pipeline.RunData, program.Setup]:
  """Everything a run's config decides, checked before its workdir is touched."""
  with clock.phase("data"):
    data = pipeline.for_run(config, training=training, process_index=jax.process_index(),
                            process_count=jax.process_count())
  mesh = _mesh(config, training)
  if training:
    sharding.check_batch(config.batch_size, mesh)
    sharding.check_batch(config.eval.batch_size, mesh, "eval.batch_size")
  setup = program.build(config, data.prepared.vocab_size, data.prepared.mask_id, data.total_steps, mesh)
  return data, setup


def open_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, training: bool = False,
             step: int | None = None, allow_new_data: bool = False,
             claim: Callable[[pipeline.RunData, program.Setup], None] | None = None,
             clock: phases.PhaseClock | None = None) -> Run:
  """The run at `step` (None: its newest readable checkpoint), built from `config`.

  training: a missing checkpoint is a fresh start (the state initialised), unreadable checkpoints
  are set aside, the iterator continues where the checkpoint left it and the checkpointer stays
  open. `claim(data, setup)` runs once all is built and before the checkpoint is read: the trainer
  takes the workdir there, so a config that fails to build leaves the workdir as it was.
  """
  workdir, clock = pathlib.Path(workdir), clock or phases.PhaseClock()
  data, setup = _build(config, training, clock)
  if claim:
    claim(data, setup)
  with clock.phase("checkpoint"):
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", int(config.checkpoint.keep),
                                   set_aside_unreadable=training)
  try:
    with jax.set_mesh(setup.mesh), clock.phase("checkpoint"):
      restored = (ckpt.restore_latest(setup.abstract_state) if step is None
                  else ckpt.restore_step(step, setup.abstract_state))
      if restored is None and not training:
        raise UserError(f"{workdir / 'checkpoints'} holds no checkpoint; train the run first")
      if restored is None:
        return Run(workdir, config, data, setup, setup.init(), 0, {}, ckpt)
    check_data(restored.meta, data.prepared, training=training, allow_new_data=allow_new_data)
  except BaseException:
    ckpt.close()
    raise
  if not training:
    ckpt.close()
    return Run(workdir, config, data, setup, restored.state.replace(opt_state=None), restored.step,
               restored.meta)
  data.iterator.set_state(restored.data_state)
  return Run(workdir, config, data, setup, restored.state, restored.step, restored.meta, ckpt)


def load_run(workdir: str | pathlib.Path,
             edit: Callable[[ml_collections.ConfigDict], None] | None = None,
             step: int | None = None) -> Run:
  """A saved run for inference, from its config.json; `edit` may change eval settings (e.g.
  mc_samples) first. Fails before any data is prepared when the run has no checkpoint yet."""
  workdir = pathlib.Path(workdir)
  config = read_config(workdir)
  if not checkpoint.saved_steps(workdir / "checkpoints"):
    raise UserError(f"{workdir} has no checkpoint yet (nothing in {workdir / 'checkpoints'}); train "
                    "it first with python -m dlmscale.main --workdir=... or wait for its first save "
                    "(config.checkpoint.every_steps)")
  if edit:
    edit(config)
  return open_run(config, workdir, step=step)
