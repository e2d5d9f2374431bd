"""The CPU study: reproduce (or not) the diffusion-vs-AR crossover on 2 cores in about an hour.

Both objectives x 3 sizes (s0.1M, s0.2M, s0.4M) x 2 unique budgets (6.4k and 25.6k tokens: 50 and
200 chunks of 128) x epochs {1, 4, 16, 64}, seed 0; plus seed 1 on the s0.2M / 6.4k slice to show
the seed-to-seed noise, and 256 epochs of s0.1M / 6.4k to see how far diffusion keeps improving. The budgets are tiny on purpose: repetition only bites when the model can
memorise the unique data, and on a CPU that means tens of thousands of tokens, not billions.

  python -m launch.local --config=configs/cpu_study.py --workdir=runs/cpu_study --parallel=2
  python -m analysis.report --runs=runs/cpu_study --out=docs/cpu_study

Argument keys as in datacons.py (objectives, sizes, unique, epochs, seeds), plus noise_seeds,
noise_size, noise_unique (the second-seed slice) and long_epochs, long_size, long_unique.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid

# One prepared dataset for the study and the quickstart: vocab 1024, 128-token chunks.
SETTINGS: dict[str, Any] = {
    "data.seq_len": 128, "data.vocab_size": 1024, "batch_size": 16,
    "eval.num_sequences": 96, "eval.batch_size": 32, "eval.mc_samples": 4,
    "eval.mdm_estimator": "time",  # the estimator docs/cpu_study was measured with
    "eval.task_every": 2,  # the built-in task at every 2nd evaluation and the last (split "mc" rows);
    # one scoring costs ~6-8 validation passes (s0.4M, measured under load): raise N to save time
    "checkpoint.every_steps": 500, "log_every_steps": 20, "optim.warmup_frac": 0.05,
}
CPU_EVALS_PER_RUN = 8  # an int: grid.EVALS_PER_RUN is the per-scale table
MIN_EVAL_INTERVAL = 4  # steps: a 6-step run evaluates at its end, not after every step
DEFAULTS: dict[str, Any] = dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.2M", "s0.4M"],
                                unique=[6_400, 25_600], epochs=[1.0, 4.0, 16.0, 64.0], seeds=[0],
                                noise_seeds=[1], noise_size="s0.2M", noise_unique=6_400,
                                long_epochs=[256.0], long_size="s0.1M", long_unique=6_400)


def options(arg: str | None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(defaults or DEFAULTS))
  grid.check_sizes(o["sizes"] + [o["noise_size"]])
  return o


def _point(obj: str, size: str, u: int, e: float, seed: int) -> dict[str, Any]:
  steps = grid.steps_for(u, e, SETTINGS["batch_size"], SETTINGS["data.seq_len"])
  every = max(-(-steps // CPU_EVALS_PER_RUN), MIN_EVAL_INTERVAL)
  return grid.point(obj, size, u, e, seed, "cpu", **{"eval.every_steps": every})


def points(o: dict[str, Any]) -> list[dict[str, Any]]:
  main = [_point(obj, size, u, e, seed) for seed, u, e, size, obj in itertools.product(
      o["seeds"], o["unique"], o["epochs"], o["sizes"], o["objectives"])]
  noise = [_point(obj, o["noise_size"], o["noise_unique"], e, seed) for seed, e, obj in
           itertools.product(o["noise_seeds"], o["epochs"], o["objectives"])]
  long = [_point(obj, o["long_size"], o["long_unique"], e, seed) for seed, e, obj in
          itertools.product(o["seeds"], o["long_epochs"], o["objectives"])]
  return grid.dedupe(main + noise + long)


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return points(options(arg))


def base_config() -> ml_collections.ConfigDict:
  return grid.apply_overrides(grid.base.get_config(), SETTINGS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(base_config(), sweep(arg)[0])
