"""Where the trainer's scalars go besides the metrics log: TensorBoard, and wandb when asked.

TensorBoard event files are written by tensorboardX (no TensorFlow). wandb is optional
(config.wandb.project; the package is imported only then): its run id is derived from the workdir,
so a resumed run continues the same wandb run, and mode "offline" writes everything under the run
directory (run_dir.WANDB) for a later `wandb sync`. Only the primary process writes.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import ml_collections

from dlmscale import run_dir
from dlmscale.errors import UserError

WANDB_MODES = ("online", "offline", "disabled")


class Trackers:
  """write_scalars(step, {tag: value}) to every sink the config turns on; close() them."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
    self.tb, self.wandb = None, None
    if config.get("tensorboard", True):
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(run_dir.tensorboard_dir(workdir)), flush_secs=10)
    w = config.get("wandb") or {}
    if w.get("project"):
      self.wandb = _wandb_run(config, pathlib.Path(workdir))

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self.tb is not None:
      for tag, value in scalars.items():
        self.tb.add_scalar(tag, float(value), int(step))
      self.tb.flush()
    if self.wandb is not None:
      self.wandb.log({k: float(v) for k, v in scalars.items()}, step=int(step))

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.wandb is not None:
      self.wandb.finish()


def check(config: ml_collections.ConfigDict) -> None:
  """A bad wandb mode fails before the run directory exists (train/config_checks.py)."""
  mode = (config.get("wandb") or {}).get("mode", "online")
  if mode not in WANDB_MODES:
    raise UserError(f"config.wandb.mode={mode!r}: choose one of {', '.join(WANDB_MODES)}")


def _wandb_run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Any:
  w = config.wandb
  try:
    import wandb
  except ImportError:
    raise UserError("config.wandb.project is set but wandb is not installed; pip install "
                    "wandb==0.31.0 (requirements-eval.txt), or leave config.wandb.project empty") from None
  run_id = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
  return wandb.init(project=w.project, entity=w.entity or None, name=w.name or config.get("run_name")
                    or workdir.name, id=run_id, resume="allow", mode=w.mode,
                    dir=str(workdir), config=config.to_dict())  # wandb adds run_dir.WANDB
