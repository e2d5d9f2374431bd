"""WSD trunks and branches in a grid: which point grows from which, and when a branch may start.

A branch (config branch.trunk, configs/grid.py wsd_family) starts from its trunk's checkpoint at
branch.start_step, so a launcher starts it only once that checkpoint exists (or once the branch has
checkpoints of its own: then it resumes on its own). branch.trunk is the trunk's run directory,
relative to the grid directory (the branch's run directory's parent).
"""

from __future__ import annotations

import pathlib
from typing import Callable

import ml_collections

from dlmscale import run_dir
from launch.grids import Grid


def role(config: ml_collections.ConfigDict) -> str:
  """"trunk", "branch", or "" for a run of its own."""
  if config.get("branch", {}).get("trunk"):
    return "branch"
  return "trunk" if config.get("trunk", {}).get("branch_steps") else ""


def trunk_of(config: ml_collections.ConfigDict) -> str:
  """A branch's trunk (as branch.trunk gives it: a run name in the grid directory), else ""."""
  return str(config.get("branch", {}).get("trunk", "") or "")


def _trunk_path(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  return workdir / pathlib.Path(trunk_of(config)).expanduser()  # an absolute branch.trunk stays itself


def ready(grid: Grid, workdir: pathlib.Path, name: str) -> bool:
  """True unless `name` is a branch whose trunk has not yet saved the checkpoint it starts from."""
  config = grid.configs[name]
  if role(config) != "branch":
    return True
  own = run_dir.checkpoints_dir(workdir / name)
  if own.is_dir() and any(p.name.isdigit() for p in own.iterdir()):
    return True
  trunk = run_dir.checkpoints_dir(_trunk_path(workdir, config))
  return (trunk / str(int(config.branch.start_step))).is_dir()  # orbax renames it in when complete


def never(grid: Grid, workdir: pathlib.Path, name: str, launched: list[str], failed: dict[str, str],
          running: Callable[[str], bool]) -> str | None:
  """Why a waiting branch can never start in this launch (its trunk failed, finished without the
  checkpoint, or is neither launched nor `running`), or None when it is ready or may still be."""
  if ready(grid, workdir, name):
    return None
  config = grid.configs[name]
  trunk, step = trunk_of(config), int(config.branch.start_step)
  if trunk in failed:
    return f"its trunk {trunk} failed"
  if run_dir.is_finished(_trunk_path(workdir, config)):
    return f"its trunk {trunk} finished without a checkpoint at step {step} (trunk.branch_steps lacks it?)"
  if trunk not in launched and not running(trunk):
    return f"its trunk {trunk} is not in this launch (--only?) and has no checkpoint at step {step} yet"
  return None


def relations(grid: Grid) -> dict[str, dict]:
  """{run name: {"role", "trunk"?}} for the trunks and branches of a grid (the manifest records it)."""
  out = {}
  for name, config in grid.configs.items():
    r = role(config)
    if r:
      out[name] = {"role": r, **({"trunk": trunk_of(config)} if r == "branch" else {})}
  return out
