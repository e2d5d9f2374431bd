"""Load a finished (or partly trained) run for inference: its config, data, model and newest params.

The run's own config.json decides everything: the same prepared data and tokenizer, the same model.
The mesh is the run's when it tiles the devices present, else pure data parallelism over all of
them, so a run trained on a cluster can be evaluated on a laptop.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from dlmscale import checkpoint, program, rundir, sharding
from dlmscale import model as model_lib
from dlmscale.data import pipeline
from dlmscale.errors import UserError


def make_apply_fn(model_cfg: model_lib.ModelConfig) -> Callable[[Any, jax.Array], jax.Array]:
  """model.apply under the logical axis rules, as training ran it; holds no parameters."""
  model = model_lib.Transformer(model_cfg)

  def apply_fn(params, tokens_BxL: jax.Array) -> jax.Array:
    with nn.logical_axis_rules(sharding.LOGICAL_RULES):
      return model.apply({"params": params}, tokens_BxL)
  return apply_fn


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  prepared: pipeline.Prepared
  setup: program.Setup
  params: Any
  step: int
  apply_fn: Callable[[Any, jax.Array], jax.Array]  # (params, tokens_BxL) -> logits_BxLxV

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


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  ckpt = workdir / "checkpoints"
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _mesh(config: ml_collections.ConfigDict) -> Mesh:
  try:
    return sharding.make_mesh(config.mesh)
  except UserError:
    return sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))


def load_run(workdir: str | pathlib.Path,
             edit: Callable[[ml_collections.ConfigDict], None] | None = None) -> Run:
  """The run's newest readable checkpoint; `edit` may change eval settings (e.g. mc_samples) first."""
  workdir = pathlib.Path(workdir)
  config = read_config(workdir)
  if not checkpoint_steps(workdir):
    raise UserError(f"{workdir} has no checkpoint yet (nothing in {workdir / 'checkpoints'}); train "
                    "it first with python -m dlmscale.main --workdir=... or wait for its first save "
                    "(config.checkpoint.every_steps)")
  if edit:
    edit(config)
  prepared = pipeline.prepare(config.data)
  total = pipeline.steps_for_budget(config.unique_tokens, config.epochs, config.batch_size,
                                config.data.seq_len)
  mesh = _mesh(config)
  setup = program.build(config, prepared.vocab_size, prepared.mask_id, total, mesh)
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", int(config.checkpoint.keep))
  try:
    with jax.set_mesh(mesh):
      restored = ckpt.restore_latest(setup.abstract_state)
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{workdir / 'checkpoints'} holds no checkpoint; train the run first")
  if restored.meta.get("tokenizer_sha256"):
    pipeline.check_tokenizer_matches(prepared, restored.meta["tokenizer_sha256"])
  return Run(workdir, config, prepared, setup, restored.state.params, restored.step,
             make_apply_fn(setup.model_cfg))

