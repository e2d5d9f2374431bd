"""Opening a run in one straight line: build -> (claim the workdir ->) resume, or build -> load.

`build` does everything a run's config decides (data preparation in one pass, the run's steps, the
mesh, the compiled program) and touches no run directory, so a config that fails leaves the workdir
as it was. The trainer then claims the workdir (train/loop.py) and calls `resume`; the evaluator and
the sampler call `load`. Both read the newest readable checkpoint (or a requested one) through the
same Checkpointer. The data check is made once, against the record in the run's config
(run_dir.claim_config for training, `load` for inference). For inference the mesh is the run's own
when it tiles the devices present, else pure data parallelism over all of them, so a run trained on
a cluster can be evaluated on a laptop.
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

from dlmscale import run_dir
from dlmscale.data import pipeline
from dlmscale.errors import UserError
from dlmscale.model import attention
from dlmscale.runtime import sharding
from dlmscale.train import checkpoint, steps as program
from dlmscale.train.timer import PhaseClock


@dataclasses.dataclass(frozen=True, eq=False)
class Built:
  """What a run's config decides: its data and its compiled program. No run directory is touched."""
  config: ml_collections.ConfigDict
  data: pipeline.RunData
  setup: program.Setup

  def put(self, local_B: np.ndarray) -> jax.Array:
    """A host batch split over the data-parallel devices (rows must divide their count)."""
    return sharding.host_batch_to_global(np.asarray(local_B), self.setup.batch_sharding)


@dataclasses.dataclass(frozen=True, eq=False)
class Loaded(Built):
  """A run opened at one step for inference: its params (no optimizer state)."""
  workdir: pathlib.Path = pathlib.Path()
  params: Any = None
  step: int = 0


def build(config: ml_collections.ConfigDict, mesh: Mesh, clock: PhaseClock | None = None) -> Built:
  """Data (one pass) -> the run's steps -> the program on `mesh`."""
  clock = clock or PhaseClock()
  with clock.phase("data"):
    data = pipeline.for_run(config)
  config = resolve_remat(resolve_attention(config, mesh), mesh)
  setup = program.build(config, data.prepared.vocab_size, data.prepared.mask_id, data.total_steps, mesh)
  return Built(config, data, setup)


def resolve_attention(config: ml_collections.ConfigDict, mesh: Mesh) -> ml_collections.ConfigDict:
  """model.attention=auto made concrete for the devices of `mesh` (splash on TPU where the shape
  allows it, else xla), printed with the reason; the run directory's config records the choice."""
  if config.model.attention != "auto":
    return config
  m = program.model_config_from(config, 2, mesh.devices.flat[0].platform)  # the shape, any vocabulary
  _, why = attention.choose("auto", mesh.devices.flat[0].platform, m.max_len, m.head_dim)
  print(f"model.attention=auto -> {m.attention} ({why})", flush=True)
  out = ml_collections.ConfigDict(config.to_dict())
  out.model.attention = m.attention
  return out


def resolve_remat(config: ml_collections.ConfigDict, mesh: Mesh) -> ml_collections.ConfigDict:
  """model.remat=auto made concrete for the devices of `mesh` (aot.compiler.choose_remat: the least
  recompute that fits; 'none' on CPU), printed; the run directory's config records the choice."""
  if config.model.remat != "auto":
    return config
  from dlmscale.aot import compiler  # noqa: PLC0415 - compiles only when asked for auto
  remat, _, tries = compiler.choose_remat(config, list(mesh.devices.flat))
  tried = ", ".join(f"{t['remat']}: {t['status']}" for t in tries) or "CPU, nothing to fit"
  print(f"model.remat=auto -> {remat} ({tried})", flush=True)
  return compiler.with_overrides(config, {"model.remat": remat})


def inference_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """The run's mesh when it tiles the devices here, else data parallelism over all of them."""
  try:
    return sharding.make_mesh(config.mesh)
  except UserError:
    return sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))


FROM_TRUNK = "from_trunk"  # in a branch's restored meta: its state came from the trunk's checkpoint

# What a WSD branch may set differently from its trunk: its length, its schedule and its own
# evaluation cadence. Anything else (model, data, seed, lr, warmup, batch) must match.
BRANCH_FREE = frozenset({"run_name", "epochs", "optim.schedule", "optim.decay_frac", "optim.min_lr_ratio",
                         "trunk.branch_steps", "branch.trunk", "branch.start_step", "eval.every_steps",
                         "eval.schedule", "eval.log_points"})


def resume(built: Built, ckpt: checkpoint.Checkpointer,
           workdir: pathlib.Path | None = None) -> checkpoint.Restored:
  """The training state to continue from: the newest readable checkpoint (unreadable ones set
  aside by `ckpt`); for a WSD branch with none yet, its trunk's checkpoint at branch.start_step
  (state, data iterator and loop sums); else step 0 with a freshly initialised state."""
  with jax.set_mesh(built.setup.mesh):
    restored = ckpt.restore_latest(built.setup.abstract_state)
    if restored is None and built.config.get("branch", {}).get("trunk"):
      return _from_trunk(built, trunk_dir(built.config, workdir or ckpt.directory.parent))
    if restored is None:
      return checkpoint.Restored(0, built.setup.init(), {}, {})
  return restored


def trunk_dir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
  """A branch's trunk run directory: branch.trunk, relative to the directory beside this run's."""
  return pathlib.Path(workdir).parent / pathlib.Path(config.branch.trunk).expanduser()  # absolute: itself


def _from_trunk(built: Built, trunk: pathlib.Path) -> checkpoint.Restored:
  step = int(built.config.branch.start_step)
  stored = run_dir.stored_config(trunk)
  if stored is None:
    raise UserError(f"branch.trunk {trunk} holds no {run_dir.CONFIG}: train the trunk first (it saves "
                    f"its checkpoint at step {step} for this branch)")
  new = json.loads(built.config.to_json_best_effort())
  old = run_dir.with_legacy_defaults(run_dir.config_without_records(stored))
  diffs = [d for d in run_dir.config_differences(old, new) if d.split(":")[0] not in BRANCH_FREE]
  if diffs:
    raise UserError(f"branch.trunk {trunk} was trained with another config than this branch: {diffs[0]}")
  if step not in checkpoint.saved_steps(run_dir.checkpoints_dir(trunk)):
    raise UserError(f"branch.trunk {trunk} has no checkpoint at step {step} yet; wait for the trunk "
                    f"to pass it (the trunk keeps it when trunk.branch_steps lists {step})")
  ckpt = checkpoint.Checkpointer(run_dir.checkpoints_dir(trunk), 1 << 20)  # reads; never rotates
  try:
    got = ckpt.restore_step(step, built.setup.abstract_state)
  finally:
    ckpt.close()
  print(f"branch: starting from {trunk} at step {step}", flush=True)
  return got._replace(meta={**got.meta, FROM_TRUNK: str(trunk)})


def read_config(workdir: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, dict]:
  """A trained run's config and the record of the data it was trained on ({} for old runs)."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise UserError(f"--workdir {workdir} does not exist; give the directory of a training run")
  path = run_dir.config_path(workdir)
  if not path.is_file():
    raise UserError(f"{workdir} holds no {run_dir.CONFIG}, so it is not a run directory; give the "
                    "--workdir that python -m dlmscale.main trained")
  try:
    stored = run_dir.read_record(path)
  except run_dir.RecordError as e:
    raise UserError(f"{e}; restore it from a copy") from None
  config = run_dir.with_legacy_defaults(run_dir.config_without_records(stored))
  return ml_collections.ConfigDict(config), dict(stored.get(run_dir.DATA_KEY) or {})


def check_tokenizer(record: dict, prepared: pipeline.Prepared) -> None:
  """Inference may read a run on a differently split corpus, but never with another tokenizer."""
  diffs = [d for d in run_dir.data_differences(record, prepared.sha256s()) if d.startswith("tokenizer")]
  if diffs:
    raise UserError(f"the run's tokenizer differs from the prepared data's in {prepared.root} "
                    f"({diffs[0]}); use the same data settings as the run, or start a new run")


def load(workdir: str | pathlib.Path, edit: Callable[[ml_collections.ConfigDict], None] | None = None,
         step: int | None = None) -> Loaded:
  """A saved run for inference at `step` (None: its newest readable checkpoint). `edit` may change
  eval settings (e.g. mc_samples) first. Fails before any data is prepared when the run has no
  checkpoint yet."""
  workdir = pathlib.Path(workdir)
  config, record = read_config(workdir)
  directory = run_dir.checkpoints_dir(workdir)
  if not checkpoint.saved_steps(directory):
    raise UserError(f"{workdir} has no checkpoint yet (nothing in {directory}); train it first with "
                    "python -m dlmscale.main --workdir=... or wait for its first save "
                    "(config.checkpoint.every_steps)")
  if config.model.attention == "splash":  # a TPU run's resolved auto: splash again on TPU, xla elsewhere
    config.model.attention = "auto"
  if edit:
    edit(config)
  built = build(config, inference_mesh(config))
  check_tokenizer(record, built.data.prepared)
  ckpt = checkpoint.Checkpointer(directory, int(config.checkpoint.keep))
  try:
    with jax.set_mesh(built.setup.mesh):
      restored = (ckpt.restore_latest(built.setup.abstract_state) if step is None
                  else ckpt.restore_step(step, built.setup.abstract_state))
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{directory} holds no readable checkpoint; train the run first")
  return Loaded(config, built.data, built.setup, workdir, restored.state.params, restored.step)
