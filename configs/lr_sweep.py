"""The learning-rate sweep behind the CPU study: each family gets its own rate, chosen on the tune set.

The study's rule of thumb (grid.LR_BY_SIZE) gives both families one rate per size; the comparison is
only fair if neither family is far from its own optimum. So both families, at two sizes (s0.1M and
s0.4M), train at MULTIPLIERS x the rule on the study's smallest budget (U = 25.6k, where repetition
bites hardest), AR for 16 epochs and diffusion for 64 (200 and 800 steps; the same sweep for
both), scored on eval.set=tune: validation documents the study's val set never uses. Every setting
is the study's (cpu_study.SETTINGS) apart from the eval set and the lr.

  python -m launch.local --config=configs/lr_sweep.py --workdir=runs/lr_sweep --parallel=2 --noreport
  python -m analysis.lr_choice --runs=runs/lr_sweep --out=docs/cpu_study/lr_choice.json

The second command picks each family's multiplier (analysis/lr_choice.py says how) and writes the
file configs/cpu_study.py reads. U = 25.6k lies between the study's first two budgets (12.8k,
51.2k). Budget (2 idle cores, cpu_study.estimate_seconds): 5 multipliers x (0.41M + 1.64M tokens)
x (46 + 114 CPU-seconds per M tokens) = 1,640 core-seconds of training, + 16 evaluations per run
and 20 starts = ~1,060 s on 2 cores, 18 minutes. Measured (2026-12-04, the 2-core development VM
otherwise idle, the committed sweep in docs/cpu_study/lr_sweep): 18 min 51 s for the first
command, the runs' own wall times adding up to 2,031 s on 2 slots.

Argument keys (lists joined with '+'): objectives, sizes, unique, multipliers, ar_epochs, mdm_epochs, seeds.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import cpu_study, grid

MULTIPLIERS = [0.25, 0.5, 1.0, 2.0, 4.0]
SWEEP_EVALS_PER_RUN = 16  # an int (grid.EVALS_PER_RUN is the per-scale table)
DEFAULTS: dict[str, Any] = dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.4M"], unique=[25_600],
                                multipliers=MULTIPLIERS, ar_epochs=16.0, mdm_epochs=64.0, seeds=[0])


def options(arg: str | None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(DEFAULTS))
  grid.check_sizes(o["sizes"])
  return o


def run_name(objective: str, size: str, u: int, epochs: float, seed: int, mult: float) -> str:
  return f"{grid.run_name(objective, size, u, epochs, seed)}-lr{grid.human(mult)}x"


def _point(obj: str, size: str, u: int, e: float, seed: int, mult: float) -> dict[str, Any]:
  s = cpu_study.SETTINGS
  steps = grid.steps_for(u, e, s["batch_size"], s["data.seq_len"])
  p = grid.point(obj, size, u, e, seed, "cpu")
  p.update({"optim.lr": grid.LR_BY_SIZE[size] * mult, "eval.set": "tune",
            "eval.every_steps": max(-(-steps // SWEEP_EVALS_PER_RUN), cpu_study.MIN_EVAL_INTERVAL),
            "run_name": run_name(obj, size, u, e, seed, mult)})
  return p


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = options(arg)
  epochs = {"ar": o["ar_epochs"], "mdm": o["mdm_epochs"]}
  return grid.dedupe([_point(obj, size, u, epochs[obj], seed, m) for seed, u, size, m, obj in itertools.product(
      o["seeds"], o["unique"], o["sizes"], o["multipliers"], o["objectives"])])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(cpu_study.base_config(), sweep(arg)[0])
