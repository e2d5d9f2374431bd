"""The CPU study: at a fixed number of unique tokens U, does masked diffusion overtake AR with compute?

Both objectives x 4 sizes (s0.1M, s0.2M, s0.4M, s1M; exact non-embedding counts 0.107M to 1.005M,
9.4x) x 3 unique budgets (U = 12.8k, 51.2k, 204.8k tokens: 100, 400, 1600 chunks of 128), seed 0.
Each (family, size, U) is one long run evaluated CPU_EVALS_PER_RUN = 32 times along the way, so its
curve shows where it is best and how it overfits after (LONG_EPOCHS: AR 32 / 16 / 8 epochs,
diffusion 512 / 64 / 16), plus a 1-epoch run (the fresh-data points the Chinchilla fit needs).
Seed 1 repeats the s0.1M / 12.8k slice. Batch 16 x 128 tokens: diffusion's longest runs take 3,200
optimizer steps. The data hold out 20% of the corpus's documents (data.val_fraction=0.2), so
every run is scored on eval.set=val (96 sequences, one from each of 96 validation documents),
held apart from the tune set (66 other documents) that chose the learning rates:
LR_BY_SIZE[size] x the family's multiplier in docs/cpu_study/lr_choice.json (configs/lr_sweep.py
runs the sweep, analysis/lr_choice.py writes the file; its two commands come first when the choice
is to be redone).

Re-run (both resumable: re-running a stopped command continues; finished runs are skipped):

  python -m launch.local --config=configs/cpu_study.py --workdir=runs/cpu_study --parallel=2
  python -m analysis.report --runs=runs/cpu_study --also=docs/cpu_study/lr_sweep --out=docs/cpu_study

(`--also` puts the committed learning-rate sweep's tables beside the study's runs in the report and
in runs.csv.) The long runs also score the built-in task at every TASK_EVERY-th evaluation.

Budget, 2 idle cores (estimate_seconds; rates measured as CPU-seconds, see ESTIMATE_S_PER_MTOK):
training tokens per size = AR (12.8k x 32 + 51.2k x 16 + 204.8k x 8 = 2.87M) + diffusion (6.55M +
3.28M + 3.28M = 13.11M) + 1-epoch runs (0.54M) = 16.5M (s0.1M: 23.5M with the seed slice).
Core-seconds = 23.5 x 46 + 16.5 x (74 + 114 + 188) = 7,290 for training, + 1,190 for the 32
evaluations per run (diffusion: 96 sequences x 4 samples, a third of a step's cost per token) +
~2,000 for the task (8 scorings per long run) + 52 starts x 10 s = ~11,000 core-seconds / 2 cores
= 92 minutes; the lr sweep adds 18 (configs/lr_sweep.py): ~110 minutes in all, under the 2-hour
target. Given up to get there: separate runs per epoch count (one long run's curve instead, so an
intermediate epoch is read mid-schedule, not annealed), sizes above s1M (s3M alone would add ~50
minutes), diffusion past 16 epochs at U = 204.8k (there it gives a bound, not a minimum), 1024
epochs at U = 12.8k, and larger budgets (25.6k-410k: twice the tokens per run).

How long it took, measured: docs/cpu_study/PROVENANCE.md and BENCHMARKS.md.

Argument keys (lists joined with '+'): objectives, sizes, unique, epochs (empty: LONG_EPOCHS; else
these epochs at every U), single_epoch, seeds, noise_seeds, noise_size, noise_unique.
"""

from __future__ import annotations

import itertools
import json
import math
import pathlib
from typing import Any

import ml_collections

from configs import grid
from dlmscale.eval import builtin_task
from dlmscale.errors import UserError

# One prepared dataset for the study, its lr sweep and the quickstart: vocab 1024, 128-token chunks.
SETTINGS: dict[str, Any] = {
    "data.seq_len": 128, "data.vocab_size": 1024, "data.val_fraction": 0.2, "batch_size": 16,
    "eval.num_sequences": 96, "eval.batch_size": 32, "eval.mc_samples": 4, "eval.set": "val",
    "eval.mdm_estimator": "time",  # the estimator the earlier study was measured with
    "checkpoint.every_steps": 500, "log_every_steps": 20, "optim.warmup_frac": 0.05,
}
CPU_EVALS_PER_RUN = 32  # an int (grid.EVALS_PER_RUN is the per-scale table): along each long run: the minimum's epoch to within 1/32 of the run
MIN_EVAL_INTERVAL = 4  # steps: a 12-step run evaluates at its end, not after every step
# Each long run's epochs per family and budget: past where the family overfits, as far as the CPU
# budget allows (diffusion 3,200 steps at U = 12.8k; at 204.8k it gives a bound, not a minimum).
LONG_EPOCHS: dict[str, dict[int, float]] = {"ar": {12_800: 32.0, 51_200: 16.0, 204_800: 8.0},
                                            "mdm": {12_800: 512.0, 51_200: 64.0, 204_800: 16.0}}
# Other budgets (a `unique=` argument): epochs ~ U^-slope from the smallest budget, so diffusion
# keeps its tokens per run and AR halves its epochs per 4x U.
EPOCH_SLOPE = {"ar": 0.5, "mdm": 1.0}
LR_CHOICE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cpu_study" / "lr_choice.json"
# For the docstring's budget: CPU-seconds per million training tokens (one core per run, as
# --parallel=2 runs them), the mean of AR and MDM's step_cpu_s in `python -m bench.train_bench --size
# s0.1M,s0.2M,s0.4M,s1M --objective ar,mdm --batch 16 --seq_len 128 --vocab 1024 --interleave
# --steps 5 --reps 3` (load 7.8 on 2 cores; CPU seconds barely move with load, wall time does).
ESTIMATE_S_PER_MTOK = {"s0.1M": 46.0, "s0.2M": 74.0, "s0.4M": 114.0, "s1M": 188.0}
EVAL_COST = 1 / 3  # a forward pass, per token, against a training step
START_S = 10.0  # per run: a worker's set-up, a cached compile, the first evaluation's build
# The built-in task, scored at every TASK_EVERY-th evaluation of each long run (and its last): each
# family's best run then has the task over training (Ni et al.: diffusion's task gap keeps growing
# while its validation loss rises). A scoring is a forward pass over every choice of every item
# (diffusion: eval.mc_samples ELBO draws each), in training-token equivalents as below.
TASK_EVERY = 4  # 8 task points along a 32-evaluation run
TASK_TOKENS = builtin_task.DEFAULT_ITEMS * builtin_task.DEFAULT_CHOICES * SETTINGS["data.seq_len"]  # at most
DEFAULTS: dict[str, Any] = dict(
    objectives=["ar", "mdm"], sizes=["s0.1M", "s0.2M", "s0.4M", "s1M"],
    unique=[12_800, 51_200, 204_800], epochs=[], single_epoch=True, seeds=[0],
    noise_seeds=[1], noise_size="s0.1M", noise_unique=12_800, task_every=TASK_EVERY)


def options(arg: str | None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(defaults or DEFAULTS))
  o["epochs"] = [float(grid.parse_count(str(e))) for e in o["epochs"]]
  grid.check_sizes(o["sizes"] + [o["noise_size"]])
  return o


def epochs_for(objective: str, unique_tokens: int) -> float:
  """The long run's epochs: LONG_EPOCHS, or for another U the rule above (a power of two, >= 1)."""
  table = LONG_EPOCHS[objective]
  if unique_tokens in table:
    return table[unique_tokens]
  u0 = min(table)
  e = table[u0] * (u0 / unique_tokens) ** EPOCH_SLOPE[objective]
  return float(2 ** max(0, round(math.log2(e))))


def lr_multipliers(path=LR_CHOICE) -> dict[str, float]:
  """{"ar": x, "mdm": y}: each family's lr as a multiple of LR_BY_SIZE, as the sweep chose it."""
  try:
    choice = json.loads(path.read_text())
    return {obj: float(choice["multipliers"][obj]) for obj in ("ar", "mdm")}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path}: no readable learning-rate choice ({e}); restore it with git checkout, "
                    "or re-run the sweep: python -m analysis.lr_choice --runs=RUNS_OF_configs/lr_sweep.py") from None


def _point(obj: str, size: str, u: int, e: float, seed: int, lr_mult: dict[str, float],
           task_every: int = 0) -> dict[str, Any]:
  """task_every > 0: the task along the run (left out at 0, so such a point's hash is unchanged)."""
  steps = grid.steps_for(u, e, SETTINGS["batch_size"], SETTINGS["data.seq_len"])
  return grid.point(obj, size, u, e, seed, "cpu", **{
      "optim.lr": grid.LR_BY_SIZE[size] * lr_mult[obj],
      "eval.every_steps": max(steps // CPU_EVALS_PER_RUN, MIN_EVAL_INTERVAL),
      **({"eval.task_every": int(task_every)} if task_every > 0 and e > 1 else {})})


def _runs_of(o: dict[str, Any], obj: str, u: int) -> list[float]:
  """The long run(s) first (get_config's point), then the 1-epoch run."""
  long = o["epochs"] or [epochs_for(obj, u)]
  return long + ([1.0] if o["single_epoch"] and 1.0 not in long else [])


def points(o: dict[str, Any]) -> list[dict[str, Any]]:
  lr_mult = lr_multipliers()
  main = [_point(obj, size, u, e, seed, lr_mult, o["task_every"])
          for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"])
          for e in _runs_of(o, obj, u)]
  noise = [_point(obj, o["noise_size"], o["noise_unique"], e, seed, lr_mult, o["task_every"])
           for seed, obj in itertools.product(o["noise_seeds"], o["objectives"])
           for e in _runs_of(o, obj, o["noise_unique"])]
  return grid.dedupe(main + noise)


def estimate_seconds(pts: list[dict[str, Any]], parallel: int = 2) -> float:
  """Wall seconds on `parallel` idle cores: training + evaluations + start-up, from the constants above."""
  core_s = 0.0
  for p in pts:
    steps = grid.steps_for(p["unique_tokens"], p["epochs"], SETTINGS["batch_size"], SETTINGS["data.seq_len"])
    samples = SETTINGS["eval.mc_samples"] if p["objective"] == "mdm" else 1
    n_evals = steps // p["eval.every_steps"] + 1
    eval_tokens = n_evals * SETTINGS["eval.num_sequences"] * samples * SETTINGS["data.seq_len"] * EVAL_COST
    task_every = p.get("eval.task_every", 0)
    task_tokens = ((n_evals // task_every + 1) * TASK_TOKENS * samples * EVAL_COST if task_every
                   else 0.0)
    core_s += ((p["unique_tokens"] * p["epochs"] + eval_tokens + task_tokens) / 1e6
               * ESTIMATE_S_PER_MTOK[p["model_size"]])
    core_s += START_S
  return core_s / parallel


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return points(options(arg))


def base_config() -> ml_collections.ConfigDict:
  return grid.apply_overrides(grid.base.get_config(), SETTINGS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(base_config(), sweep(arg)[0])
