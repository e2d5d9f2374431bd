"""The CPU study: at a fixed number of unique tokens U, does masked diffusion overtake AR with compute?

Both objectives x 4 sizes (s0.1M, s0.2M, s0.4M, s1M: 10x in non-embedding parameters) x 3 unique
budgets (U = 25.6k, 102.4k, 409.6k tokens: 200, 800, 3200 chunks of 128), seed 0. Each (family,
size, U) is one long run, evaluated EVALS_PER_RUN times along the way, so its eval curve shows where
it is best and how it overfits after (epochs_for: AR 32 / 16 / 8 epochs, diffusion 256 / 64 / 16 at
the three budgets, the same tokens for diffusion at every U), plus a 1-epoch run (the fresh-data
points the Chinchilla fit needs). Seed 1 repeats the s0.1M / 25.6k slice. Batch 16 x 128 tokens:
diffusion's longest runs take 3,200 optimizer steps. Every run is scored on eval.set=val (67
validation documents, 96 sequences), held apart from the tune set that chose the learning rates:
LR_BY_SIZE[size] x the family's multiplier from docs/cpu_study/lr_choice.json (configs/lr_sweep.py
runs the sweep, launch/lr_choice.py writes the file).

Re-run (both resumable: re-running a stopped command continues; finished runs are skipped):

  python -m launch.local --config=configs/cpu_study.py --workdir=runs/cpu_study --parallel=2
  python -m analysis.report --runs=runs/cpu_study --out=docs/cpu_study

Budget (estimate, 2 idle cores): training tokens per size = AR (25.6k x 32 + 102.4k x 16 + 409.6k x
8 = 5.73M) + diffusion (3 x 6.55M = 19.66M) + 1-epoch runs (2 x 0.54M) = 26.5M. Seconds per
million tokens with --parallel=2 (one core per run), from ESTIMATE_S_PER_MTOK below: s0.1M 60,
s0.2M 85, s0.4M 130, s1M 200 -> 26.5M x (60 + 85 + 130 + 200) = 12,600 core-seconds of training,
+ 10% evaluation, + the seed slice (7.4M x 60 = 440) = ~14,300 core-seconds / 2 cores = ~2.0 hours,
plus the lr sweep (configs/lr_sweep.py: ~0.5 hour). Over the 2-hour target by about half an hour;
what was given up to get this close: separate runs per epoch count (one long run's curve instead,
so an intermediate epoch is scored mid-schedule, not annealed), sizes above s1M, diffusion past 16
epochs at U = 409.6k (there it gives a bound, not a minimum) and 512+ epochs at U = 25.6k.
How long it took: not yet measured on an idle host (see docs/cpu_study/PROVENANCE.md).

Argument keys (lists joined with '+'): objectives, sizes, unique, epochs (empty: epochs_for's table;
else these epochs at every U), single_epoch, seeds, noise_seeds, noise_size, noise_unique.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import ml_collections

from configs import grid
from dlmscale.errors import UserError

# One prepared dataset for the study, its lr sweep and the quickstart: vocab 1024, 128-token chunks.
SETTINGS: dict[str, Any] = {
    "data.seq_len": 128, "data.vocab_size": 1024, "batch_size": 16,
    "eval.num_sequences": 96, "eval.batch_size": 32, "eval.mc_samples": 4, "eval.set": "val",
    "eval.mdm_estimator": "time",  # the estimator the earlier study was measured with
    "checkpoint.every_steps": 500, "log_every_steps": 20, "optim.warmup_frac": 0.05,
}
EVALS_PER_RUN = 32  # along each long run: the minimum's epoch to within 1/32 of the run
MIN_EVAL_INTERVAL = 4  # steps: a 12-step run evaluates at its end, not after every step
U0 = 25_600  # the smallest budget, where epochs_for's table starts
LONG_EPOCHS_AT_U0 = {"ar": 32.0, "mdm": 256.0}
# epochs ~ U^-slope: diffusion keeps its tokens per run constant, AR halves its epochs per 4x U
EPOCH_SLOPE = {"ar": 0.5, "mdm": 1.0}
LR_CHOICE = grid.REPO_ROOT / "docs" / "cpu_study" / "lr_choice.json"
# For the docstring's budget: seconds per million training tokens, one core per run, 2 idle cores.
ESTIMATE_S_PER_MTOK = {"s0.1M": 60.0, "s0.2M": 85.0, "s0.4M": 130.0, "s1M": 200.0}
DEFAULTS: dict[str, Any] = dict(
    objectives=["ar", "mdm"], sizes=["s0.1M", "s0.2M", "s0.4M", "s1M"],
    unique=[25_600, 102_400, 409_600], epochs=[], single_epoch=True, seeds=[0],
    noise_seeds=[1], noise_size="s0.1M", noise_unique=25_600)


def options(arg: str | None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(defaults or DEFAULTS))
  o["epochs"] = [float(grid.parse_count(str(e))) for e in o["epochs"]]
  grid.check_sizes(o["sizes"] + [o["noise_size"]])
  return o


def epochs_for(objective: str, unique_tokens: int) -> float:
  """The long run's epochs: LONG_EPOCHS_AT_U0 scaled by (U0 / U)^slope, a power of two, >= 1."""
  e = LONG_EPOCHS_AT_U0[objective] * (U0 / unique_tokens) ** EPOCH_SLOPE[objective]
  return float(2 ** max(0, round(math.log2(e))))


def lr_multipliers(path=LR_CHOICE) -> dict[str, float]:
  """{"ar": x, "mdm": y}: each family's lr as a multiple of LR_BY_SIZE, as the sweep chose it."""
  try:
    choice = json.loads(path.read_text())
    return {obj: float(choice["multipliers"][obj]) for obj in ("ar", "mdm")}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path}: no readable learning-rate choice ({e}); restore it with git checkout, "
                    "or re-run the sweep: python -m launch.lr_choice --runs=RUNS_OF_configs/lr_sweep.py") from None


def _point(obj: str, size: str, u: int, e: float, seed: int, lr_mult: dict[str, float]) -> dict[str, Any]:
  steps = grid.steps_for(u, e, SETTINGS["batch_size"], SETTINGS["data.seq_len"])
  p = grid.point(obj, size, u, e, seed, "cpu")
  p["optim.lr"] = grid.LR_BY_SIZE[size] * lr_mult[obj]
  p["eval.every_steps"] = max(steps // EVALS_PER_RUN, MIN_EVAL_INTERVAL)
  return p


def _runs_of(o: dict[str, Any], obj: str, u: int) -> list[float]:
  """The long run(s) first (get_config's point), then the 1-epoch run."""
  long = o["epochs"] or [epochs_for(obj, u)]
  return long + ([1.0] if o["single_epoch"] and 1.0 not in long else [])


def points(o: dict[str, Any]) -> list[dict[str, Any]]:
  lr_mult = lr_multipliers()
  main = [_point(obj, size, u, e, seed, lr_mult)
          for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"])
          for e in _runs_of(o, obj, u)]
  noise = [_point(obj, o["noise_size"], o["noise_unique"], e, seed, lr_mult)
           for seed, obj in itertools.product(o["noise_seeds"], o["objectives"])
           for e in _runs_of(o, obj, o["noise_unique"])]
  return grid.dedupe(main + noise)


def estimate_seconds(pts: list[dict[str, Any]], parallel: int = 2) -> float:
  """Training wall seconds on `parallel` idle cores from ESTIMATE_S_PER_MTOK (evaluation not included)."""
  core_s = sum(p["unique_tokens"] * p["epochs"] / 1e6 * ESTIMATE_S_PER_MTOK[p["model_size"]] for p in pts)
  return core_s / parallel


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return points(options(arg))


def base_config() -> ml_collections.ConfigDict:
  return grid.apply_overrides(grid.base.get_config(), SETTINGS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(base_config(), sweep(arg)[0])
