"""The CPU study: at a fixed number of unique tokens U, does masked diffusion overtake AR with compute?

Both objectives x 4 sizes (s0.1M, s0.2M, s0.4M, s1M; exact non-embedding counts 0.107M to 1.005M,
9.4x) x 2 unique budgets (U = 12.8k and 51.2k tokens: 100 and 400 chunks of 128), seed 0, on WSD
trunks with cooldown branches (configs/grid.py wsd_family): per (family, size, U) one trunk at the
constant peak rate, evaluated TRUNK_EVALS times (the curve: where the loss turns), and one branch per
epoch count in BRANCH_EPOCHS (AR 2-32, diffusion 16-256), each the standalone WSD run of its length
read at its end: every E's point is annealed, for both families alike. Batch 16 x 128 tokens; the
longest branch (diffusion, 256 epochs at 51.2k) is 6,400 steps. The data hold out 20% of the
corpus's documents (data.val_fraction=0.2): every claim is scored on eval.set=val (96 sequences,
one from each of 96 validation documents), held apart from the tune set (66 other documents) that
chose the learning rates (LR_BY_SIZE[size] x the family's multiplier in docs/cpu_study/lr_choice.json,
from configs/lr_sweep.py and analysis/lr_choice.py) and that scores the checks below.

Checks, each at s0.1M and U = 12.8k on the tune set, per family, as full trunk-and-branch families
(CHECKS): the learning-rate multiplier at this study's horizon (0.5x, 1x, 2x the chosen one: the
sweep chose it over 800 steps, the study's diffusion branches run up to 6,400) and weight decay 0.3
against the base 0.1. Seeds 1 and 2 repeat the s0.1M / 12.8k families on the val set (the
seed-to-seed spread at one point per family).

Re-run (resumable: re-running a stopped command continues; finished runs are skipped):

  python -m launch.local --config=configs/cpu_study.py --workdir=runs/cpu_study --parallel=2
  python -m analysis.report --runs=runs/cpu_study --also=docs/cpu_study/lr_sweep --out=docs/cpu_study

(`--also` puts the committed learning-rate sweep's tables beside the study's runs.) Points come
critical path first: the largest trunk, then whole families from the cheapest (critical_path_first),
so the second slot completes family after family while the largest trunk runs.

Budget, 2 idle cores (estimate_seconds; rates as CPU-seconds per million tokens,
ESTIMATE_S_PER_MTOK): per size, diffusion trains 3.9M tokens at 12.8k and 15.6M at 51.2k (a trunk
to 204.8 epochs plus the branches' cooldowns), AR 0.5M and 1.9M: 21.9M tokens per size, 9,240
core-seconds over the four sizes; the checks and seeds add ~1,300, starts and evaluations ~1,200:
~98 minutes on 2 idle cores. Given up to get there: s3M (~2,200 core-seconds at 12.8k alone), U =
204.8k (the GPU study's, configs/gpu_study.py), diffusion to 512 epochs (`mdm_epochs=16+...+512`
extends it; the launcher's --extend adds the new points to a grid directory), and the built-in task
along the runs (`task_every=N` scores it at every Nth trunk evaluation).

How long it took, measured: docs/cpu_study/PROVENANCE.md and BENCHMARKS.md.

Argument keys (lists joined with '+'): objectives, sizes, unique, ar_epochs, mdm_epochs, seeds,
extra_seeds, checks (true|false), task_every.
"""

from __future__ import annotations

import itertools
import json
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
MIN_EVAL_INTERVAL = 4  # steps: a short run evaluates at its end, not after every step
TRUNK_EVALS = 32  # along each trunk: where the loss turns, to within 1/32 of the trunk
BRANCH_EPOCHS: dict[str, list[float]] = {"ar": [2.0, 4.0, 8.0, 16.0, 32.0],
                                         "mdm": [16.0, 32.0, 64.0, 128.0, 256.0]}
WARMUP_STEPS = 16  # every run's linear warmup, so a trunk's warmup is each of its branches'
DECAY_FRAC = 0.2  # each branch cools down over its last 20% (Hägele et al. 2024: 10-20% matches cosine)
# The checks at s0.1M, U = 12.8k on the tune set: name suffix -> overrides beside the family's lr.
CHECK_SIZE, CHECK_UNIQUE = "s0.1M", 12_800
CHECKS: dict[str, dict[str, float]] = {"lr0.5x": {"lr_factor": 0.5}, "lr1x": {"lr_factor": 1.0},
                                       "lr2x": {"lr_factor": 2.0}, "wd0.3": {"lr_factor": 1.0, "weight_decay": 0.3}}
LR_CHOICE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cpu_study" / "lr_choice.json"
# CPU-seconds per million training tokens (one core per run, as --parallel=2 runs them), the mean of
# AR and MDM's step_cpu_s in `python -m bench.train_bench --size s0.1M,s0.2M,s0.4M,s1M --objective
# ar,mdm --batch 16 --seq_len 128 --vocab 1024 --interleave --steps 5 --reps 3`.
ESTIMATE_S_PER_MTOK = {"s0.1M": 46.0, "s0.2M": 74.0, "s0.4M": 114.0, "s1M": 188.0}
EVAL_COST = 1 / 3  # a forward pass, per token, against a training step
START_S = 10.0  # per run: a worker's set-up, a cached compile, the first evaluation's build
# The built-in task (task_every > 0), in training-token equivalents per scoring: a forward pass
# over every choice of every item (diffusion: eval.mc_samples ELBO draws each).
TASK_TOKENS = builtin_task.DEFAULT_ITEMS * builtin_task.DEFAULT_CHOICES * SETTINGS["data.seq_len"]
DEFAULTS: dict[str, Any] = dict(
    objectives=["ar", "mdm"], sizes=["s0.1M", "s0.2M", "s0.4M", "s1M"], unique=[12_800, 51_200],
    ar_epochs=BRANCH_EPOCHS["ar"], mdm_epochs=BRANCH_EPOCHS["mdm"], seeds=[0], extra_seeds=[1, 2],
    checks=True, task_every=0)


def options(arg: str | None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
  o = grid.parse_arg(arg, dict(defaults or DEFAULTS))
  for key in ("ar_epochs", "mdm_epochs"):
    o[key] = [float(grid.parse_count(str(e))) for e in o[key]]
  grid.check_sizes(o["sizes"] + [CHECK_SIZE])
  return o


def lr_multipliers(path=LR_CHOICE) -> dict[str, float]:
  """{"ar": x, "mdm": y}: each family's lr as a multiple of LR_BY_SIZE, as the sweep chose it."""
  try:
    choice = json.loads(path.read_text())
    return {obj: float(choice["multipliers"][obj]) for obj in ("ar", "mdm")}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path}: no readable learning-rate choice ({e}); restore it with git checkout, "
                    "or re-run the sweep: python -m analysis.lr_choice --runs=RUNS_OF_configs/lr_sweep.py") from None


def _steps(p: dict[str, Any]) -> int:
  return grid.steps_for(p["unique_tokens"], p["epochs"], SETTINGS["batch_size"], SETTINGS["data.seq_len"])


def _sparse(p: dict[str, Any], task_every: int, trunk_evals: int, min_interval: int) -> dict[str, Any]:
  """A trunk evaluates `trunk_evals` times (and scores the task at every task_every-th, if > 0); a
  branch once, at its end: its annealed point."""
  if p["branch.trunk"]:
    return {**p, "eval.every_steps": _steps(p)}
  every = max(_steps(p) // trunk_evals, min_interval)
  return {**p, "eval.every_steps": every, **({"eval.task_every": int(task_every)} if task_every > 0 else {})}


def _renamed(family: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
  """A check's family under its own names (its trunk's too), so it never shares a run directory."""
  out = []
  for p in family:
    q = {**p, "run_name": f"{p['run_name']}-{suffix}"}
    if p["branch.trunk"]:
      q["branch.trunk"] = f"{p['branch.trunk']}-{suffix}"
    out.append(q)
  return out


def family(obj: str, size: str, u: int, seed: int, o: dict[str, Any], lr_mult: dict[str, float], *,
           trunk_evals: int = TRUNK_EVALS, min_interval: int = MIN_EVAL_INTERVAL,
           **extra: Any) -> list[dict[str, Any]]:
  """One (family, size, U, seed): a trunk and its branches at the study's shapes (o: the epoch lists
  `ar_epochs` / `mdm_epochs` and `task_every`)."""
  shape = {"batch_size": SETTINGS["batch_size"], "seq_len": SETTINGS["data.seq_len"]}
  lr = {"optim.lr": grid.LR_BY_SIZE[size] * lr_mult[obj] * extra.pop("lr_factor", 1.0)}
  points = grid.wsd_family(obj, size, u, o[f"{obj}_epochs"], seed, "cpu", decay_frac=DECAY_FRAC,
                           warmup_steps=WARMUP_STEPS, **shape, **lr, **extra)
  return [_sparse(p, o["task_every"], trunk_evals, min_interval) for p in points]


def _checks(o: dict[str, Any], lr_mult: dict[str, float]) -> list[dict[str, Any]]:
  points = []
  for obj in o["objectives"]:
    for name, check in CHECKS.items():
      extra = {"eval.set": "tune", "lr_factor": check["lr_factor"],
               **({"optim.weight_decay": check["weight_decay"]} if "weight_decay" in check else {})}
      points += _renamed(family(obj, CHECK_SIZE, CHECK_UNIQUE, 0, o, lr_mult, **extra), f"tune-{name}")
  return points


def critical_path_first(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The largest trunk and its branches first (the critical path: a slot takes each branch as soon
  as the trunk has saved its start), then whole families, the cheapest first, each trunk followed by
  its branches: the other slot completes family after family,
  so a study stopped part-way has whole families (annealed points) to report, not only trunks."""
  families: dict[str, list[dict[str, Any]]] = {}
  for p in points:
    families.setdefault(p["branch.trunk"] or p["run_name"], []).append(p)
  cost = {name: sum(_core_seconds(p) for p in fam) for name, fam in families.items()}
  largest = max(families, key=lambda name: _core_seconds(families[name][0]))
  rest = sorted((n for n in families if n != largest), key=cost.get)
  return families[largest] + [p for n in rest for p in families[n]]


def points(o: dict[str, Any]) -> list[dict[str, Any]]:
  lr_mult = lr_multipliers()
  main = [p for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"])
          for p in family(obj, size, u, seed, o, lr_mult)]
  seeds = [p for seed, obj in itertools.product(o["extra_seeds"], o["objectives"])
           for p in family(obj, CHECK_SIZE, CHECK_UNIQUE, seed, o, lr_mult)]
  checks = _checks(o, lr_mult) if o["checks"] else []
  return critical_path_first(grid.dedupe(main + seeds + checks))


def _core_seconds(p: dict[str, Any]) -> float:
  """One point's CPU-seconds: the steps it trains (a branch from its start), its evaluations and
  task scorings, and a start."""
  steps = _steps(p) - int(p.get("branch.start_step", 0))
  tokens = steps * SETTINGS["batch_size"] * SETTINGS["data.seq_len"]
  samples = SETTINGS["eval.mc_samples"] if p["objective"] == "mdm" else 1
  n_evals = steps // p["eval.every_steps"] + 1
  eval_tokens = n_evals * SETTINGS["eval.num_sequences"] * samples * SETTINGS["data.seq_len"] * EVAL_COST
  task_every = p.get("eval.task_every", 0)
  task_tokens = (n_evals // task_every + 1) * TASK_TOKENS * samples * EVAL_COST if task_every else 0.0
  return (tokens + eval_tokens + task_tokens) / 1e6 * ESTIMATE_S_PER_MTOK[p["model_size"]] + START_S


def estimate_seconds(pts: list[dict[str, Any]], parallel: int = 2) -> float:
  """Wall seconds on `parallel` idle cores, from the constants above (the work, not the schedule:
  the largest trunk and its last branch must also fit, which critical_path_first arranges)."""
  return sum(_core_seconds(p) for p in pts) / parallel


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return points(options(arg))


def base_config() -> ml_collections.ConfigDict:
  return grid.apply_overrides(grid.base.get_config(), SETTINGS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(base_config(), sweep(arg)[0])
