"""The README's first job: the CPU study's story at U = 12.8k, end to end, in under 5 minutes on 2 cores.

AR and diffusion at size s0.1M on U = 12.8k unique tokens of the default corpus, on WSD trunks with
cooldown branches (configs/grid.py wsd_family): per family one constant-rate trunk, evaluated
TRUNK_EVALS times along the way (the curve), and one annealed branch per epoch count (AR 4-64
epochs, diffusion 16-256), each the standalone WSD run of its length. Then the analysis report,
whose first figure is the loss-vs-epochs curves with each family's best marked:

  python -m launch.local --config=configs/quickstart.py --workdir=runs/quickstart --parallel=2

Budget (2 idle cores, one thread per run; `python -m bench.train_bench --size s0.1M --objective
ar,mdm --batch 16 --seq_len 128 --vocab 1024`: ~0.1 s per step on one core): the diffusion trunk
(1,280 steps) then its 256-epoch branch (320 steps) run one after the other on one core, ~170 s
with their evaluations; the AR trunk, every other branch and the starts fit on the other core
meanwhile. With data preparation and the report: the wall time in BENCHMARKS.md ("The main job").

Where its numbers differ from the study's (docs/cpu_study/): one size, not four; every point is an
annealed WSD branch end (the study read intermediate epochs mid-cosine); diffusion stops at 256
epochs, not 512 (its best lies near 100); warmup is 16 steps for every run (the v2 study: 5% of
each run); and the report's laws need more sizes and budgets than this grid has (each says which
grid fills it).

One run of it (argument keys below, lists joined with '+'): the standalone WSD run that a branch
equals, here diffusion's 16-epoch point evaluated along the way,

  python -m dlmscale.main --config=configs/quickstart.py:objectives=mdm,epochs=16 --workdir=runs/qs-mdm

Argument keys: objectives, sizes, unique, epochs (one list for every family; empty: EPOCHS per
family), seeds.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import cpu_study, grid

# Per family, the epoch counts whose annealed points the branches give: past each family's best (AR
# ~16 epochs, diffusion ~100 in the study) by at least 4x, and overlapping between 16 and 64.
EPOCHS: dict[str, list[float]] = {"ar": [4.0, 8.0, 16.0, 32.0, 64.0], "mdm": [16.0, 32.0, 64.0, 128.0, 256.0]}
TRUNK_EVALS = 24  # evaluations along each trunk: the curve; each branch evaluates at its end only
# Warmup, cooldown fraction and shapes are the study's (cpu_study.family).
DEFAULTS: dict[str, Any] = dict(objectives=["ar", "mdm"], sizes=["s0.1M"], unique=[12_800], epochs=[], seeds=[0])


def _options(arg: str | None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(DEFAULTS))
  o["epochs"] = [float(grid.parse_count(str(e))) for e in o["epochs"]]
  grid.check_sizes(o["sizes"])
  return o


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  lr_mult = cpu_study.lr_multipliers()
  epochs = {f"{obj}_epochs": o["epochs"] or EPOCHS[obj] for obj in EPOCHS}
  points = [p for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"])
            for p in cpu_study.family(obj, size, u, seed, {**epochs, "task_every": 0}, lr_mult,
                                      trunk_evals=TRUNK_EVALS, min_interval=1)]
  return grid.dedupe(_critical_path_first(points))


def _critical_path_first(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Trunks first, the longest first (the diffusion trunk and its last branch are the critical
  path), then branches by the step they start from, so a launcher's free slot takes the next ready
  branch while the long trunk runs."""
  trunks = sorted((p for p in points if not p["branch.trunk"]), key=lambda p: -p["epochs"])
  branches = sorted((p for p in points if p["branch.trunk"]), key=lambda p: p["branch.start_step"])
  return trunks + branches


def standalone(branch: dict[str, Any]) -> dict[str, Any]:
  """A branch as the standalone WSD run it equals (no trunk), evaluated TRUNK_EVALS times."""
  steps = grid.steps_for(branch["unique_tokens"], branch["epochs"], cpu_study.SETTINGS["batch_size"],
                         cpu_study.SETTINGS["data.seq_len"])
  return {**branch, "branch.trunk": "", "branch.start_step": 0, "eval.every_steps": max(steps // TRUNK_EVALS, 1)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The first branch of the sweep as a standalone run (a grid's points all share its keys)."""
  first = next(p for p in sweep(arg) if p["branch.trunk"])
  return grid.apply_overrides(cpu_study.base_config(), standalone(first))
