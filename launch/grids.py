"""What the launchers need from a grid file: load it, resolve and check every point, select, build argv.

A grid file (configs/*.py) declares get_config(arg) and sweep(arg); `load_points` turns it into a
`Grid` of named override dicts with config hashes, and `Grid.trainer_args` into the
`python -m dlmscale.main` flags for one point, so a point means the same thing whether a launcher
or a person types the command.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import pathlib
from typing import Any

import ml_collections

from configs.grid import apply_overrides, coerce_like
from dlmscale import config_file
from dlmscale.model import flops, sizes
from dlmscale.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def override_flags(overrides: dict[str, Any]) -> list[str]:
  """{'epochs': 16.0, 'seed': 0} -> ['--config.epochs=16.0', '--config.seed=0'] (floats keep a '.')."""
  return [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]


def format_value(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, float):
    text = repr(v)
    return text if any(c in text for c in ".en") else text + ".0"
  return str(v)


def estimate_cost(config: ml_collections.ConfigDict) -> float:
  """Relative training cost 6 (N + V d) U E, for ordering and ETAs; 1.0 for custom shapes."""
  if config.model_size not in sizes.LADDER:
    return 1.0
  return flops.nominal_train_flops(config.model_size, config.unique_tokens * config.epochs,
                                   config.data.vocab_size)


# Keys added after grid directories already existed, left out of a point's hash while they hold
# the value that reproduces the old behaviour: a grid launched before the key existed (or one in
# flight) keeps its hash, so re-running its command resumes it instead of refusing a "changed" grid.
# Section "" is the top level; a section these deletions empty is left out too.
HASH_NEUTRAL: dict[str, dict[str, Any]] = {
    "eval": {"task_every": 0, "schedule": "fixed", "log_points": 16},
    "wandb": {"project": "", "entity": "", "mode": "online", "name": ""},
    "": {"profile_steps": ""},
    "trunk": {"branch_steps": []}, "branch": {"trunk": "", "start_step": 0},
}


def config_hash(config: ml_collections.ConfigDict) -> str:
  d = json.loads(json.dumps(config.to_dict(), default=str))  # tuples as lists, as the run records them
  for section, keys in HASH_NEUTRAL.items():
    node = d if section == "" else d.get(section)
    if not isinstance(node, dict):
      continue
    for key, neutral in keys.items():
      if key in node and node[key] == neutral:
        del node[key]
    if section and not node:
      del d[section]
  blob = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- Loading a grid file --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grid:
  """A loaded grid: the file, its argument, and each point's overrides and config hash."""
  path: pathlib.Path
  arg: str | None
  points: dict[str, dict[str, Any]]  # run name -> overrides, in grid order
  hashes: dict[str, str]  # run name -> hash of the point's full config
  costs: dict[str, float]  # run name -> relative training cost (estimate_cost)
  configs: dict[str, ml_collections.ConfigDict]  # run name -> the config the trainer will build

  @property
  def spec(self) -> str:
    """The --config value: repo-relative when the file is in the repo, so it holds on any machine."""
    path = self.path.relative_to(REPO_ROOT) if self.path.is_relative_to(REPO_ROOT) else self.path
    return f"{path}:{self.arg}" if self.arg else str(path)

  @property
  def hash(self) -> str:
    return hashlib.sha256(json.dumps(self.hashes, sort_keys=True).encode()).hexdigest()[:16]

  def trainer_args(self, name: str, workdir: pathlib.Path) -> list[str]:
    """Everything after `python -m dlmscale.main` for one point."""
    return [f"--config={self.spec}", f"--workdir={workdir / name}", *override_flags(self.points[name])]


def load_points(spec: str, sets: dict[str, str] | None = None) -> Grid:
  """Loads a grid file, resolves every point's full config and checks it before anything runs."""
  path, arg, base_config, raw = config_file.load_grid(spec)
  typed_sets = {k: coerce_like(k, v, base_config) for k, v in (sets or {}).items()}
  points: dict[str, dict[str, Any]] = {}
  hashes: dict[str, str] = {}
  costs: dict[str, float] = {}
  configs: dict[str, ml_collections.ConfigDict] = {}
  for overrides in raw:
    name = overrides.get("run_name")
    if not name:
      raise UserError(f"{path.name}: a sweep() point has no run_name: {overrides}")
    if name in points:
      raise UserError(f"{path.name}: sweep() yields the run name {name!r} twice")
    full = {**overrides, **typed_sets}
    config = apply_overrides(base_config, full)
    hashes[name], costs[name], points[name] = config_hash(config), estimate_cost(config), full
    configs[name] = config
  return Grid(path=path, arg=arg, points=points, hashes=hashes, costs=costs, configs=configs)


def parse_sets(items: list[str]) -> dict[str, str]:
  """`--set KEY=VALUE` items (typed later, against the grid's config)."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.dtype=bfloat16")
    out[key] = value
  return out


def select_names(grid: Grid, only: str) -> list[str]:
  """`--only=PATTERN[,PATTERN]` (fnmatch globs) -> the matching run names, in grid order."""
  if not only:
    return list(grid.points)
  pats = only.split(",")
  names = [n for n in grid.points if any(fnmatch.fnmatch(n, p) for p in pats)]
  if not names:
    raise UserError(f"--only={only!r} matches no run name; `--dry_run` lists them")
  return names
