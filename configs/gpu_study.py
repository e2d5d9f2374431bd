"""The one-GPU study: diffusion against AR at U = 204.8k and 1M unique tokens, where the published
law's crossing is inside the design (at U = 1M and s10M, E_crit = C_crit / (6 N U) is ~35 epochs).

Both families x sizes s3M, s10M, s25M x U in {204.8k, 1M}, seed 0; vocabulary 8192, seq_len 512,
batch 64 (32,768 tokens a step). Per (family, size, U) one WSD trunk at the constant peak rate and
one cooldown branch per epoch count (configs/grid.py wsd_family: every epoch's point is annealed,
the standalone WSD run of its length): diffusion at 4-512 epochs, AR at 1-64. Learning rates are
LR_BY_SIZE (configs/grid.py) for both families; 32 evaluations along each trunk.

Sized by its own estimate (`estimate_seconds`, the H100 rates in RATE_TOK_PER_S) to run in sittings of
at most SITTING_S = 8 minutes on one GPU: the command stops itself at the limit, and the next sitting
resumes where it stopped (finished runs are skipped, a stopped run continues from its checkpoint).
U = 4M does not fit (5x the 1M tokens: ~3 hours), so it is left out; `unique=4M` adds it.

  bash docs/gpu_study/run.sh          # one sitting: runs, report, commits docs/gpu_study/
  python -m launch.local --config=configs/gpu_study.py:scale=test --workdir=/tmp/gs   # CPU, seconds
  python -m launch.aot --config=configs/gpu_study.py --topology=gpu:1x1 \\
      --gpu_target_config=bench/results/h200-2026-12-04/aot/h200_target.txtpb

Argument keys: scale (test|cluster), objectives, sizes, unique, mdm_epochs, ar_epochs, seeds (lists
joined with '+'), decay_frac.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid
from dlmscale.model import flops, sizes

AXES: dict[str, dict[str, Any]] = {
    "test": dict(objectives=["ar", "mdm"], sizes=["s0.1M"], unique=[8_192], mdm_epochs=[2.0, 4.0],
                 ar_epochs=[1.0, 2.0], seeds=[0], decay_frac=0.2),
    "cluster": dict(objectives=["ar", "mdm"], sizes=["s3M", "s10M", "s25M"], unique=[204_800, 1_000_000],
                    mdm_epochs=[4.0, 16.0, 64.0, 128.0, 256.0, 512.0],
                    ar_epochs=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], seeds=[0], decay_frac=0.2),
}
SETTINGS: dict[str, dict[str, Any]] = {
    "test": {"data.seq_len": 64, "data.vocab_size": 512, "batch_size": 8, "eval.num_sequences": 16,
             "eval.batch_size": 16, "eval.mc_samples": 2, "checkpoint.every_steps": 20, "tensorboard": False},
    "cluster": {"data.seq_len": 512, "data.vocab_size": 8192, "batch_size": 64, "eval.num_sequences": 256,
                "eval.batch_size": 256, "eval.mc_samples": 8, "eval.set": "val", "data.val_fraction": 0.1,
                "checkpoint.every_steps": 2000, "log_every_steps": 100, "model.dtype": "bfloat16",
                "model.remat": "none", "mesh.data": -1, "mesh.fsdp": 1},
}
EVALS_PER_TRUNK = 32
SITTING_S = 480  # one sitting on the GPU: the launcher is stopped at this limit and resumed later
# Training tokens per second on one H100, bf16, batch 64 x 512, V = 8192. Anchored on the one small
# model measured on a GPU (BENCHMARKS.md, H200: s10M at batch 32 x 1024, V = 50304, 1.04M tokens/s,
# 16% MFU, launch- and memory-bound at d_model 256) and scaled by model FLOPs per token at that MFU;
# s3M is capped at the same step rate (~105-126 steps/s measured for s3M in the H200 study run).
RATE_TOK_PER_S = {"s0.1M": 3.0e6, "s3M": 3.0e6, "s10M": 1.6e6, "s25M": 0.9e6}
START_S = 25.0  # a run's start and compiles with a warm persistent cache (cold: ~30 s per shape once)
EVAL_COST = 1 / 3  # a forward pass per token against a train step's forward + backward


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg, default="cluster")
  if scale not in AXES:
    raise grid.UserError(f"configs/gpu_study.py has scales {', '.join(AXES)}, not {scale!r}")
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  grid.check_sizes(opts["sizes"])
  return opts


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  s = SETTINGS[o["scale"]]
  b, l = s["batch_size"], s["data.seq_len"]
  points = []
  for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"]):
    epochs = o["mdm_epochs"] if obj == "mdm" else o["ar_epochs"]
    every = max(1, grid.steps_for(u, max(epochs), b, l) // EVALS_PER_TRUNK)
    points += grid.wsd_family(obj, size, u, epochs, seed, o["scale"] if o["scale"] == "test" else "cluster",
                              decay_frac=o["decay_frac"], seq_len=l,
                              batch_size=b, **{**{k: v for k, v in s.items() if k != "batch_size"},
                                               "eval.every_steps": every})
  return grid.dedupe(points)


def _run_seconds(p: dict[str, Any], b: int) -> float:
  """One point's estimated seconds on one H100: its own steps (a branch: from its start), evaluations."""
  l = p["data.seq_len"]
  total = grid.steps_for(p["unique_tokens"], p["epochs"], b, l)
  steps = total - int(p.get("branch.start_step", 0) or 0)
  samples = p["eval.mc_samples"] if p["objective"] == "mdm" else 1
  evals = steps // p["eval.every_steps"] + 1
  tokens = steps * b * l + evals * p["eval.num_sequences"] * samples * l * EVAL_COST
  return START_S + tokens / RATE_TOK_PER_S.get(p["model_size"], min(RATE_TOK_PER_S.values()))


def estimate_seconds(arg: str | None = None) -> dict[str, float]:
  """{"total_s", "sittings", "longest_run_s"}: the study's estimated GPU time in SITTING_S sittings."""
  b = SETTINGS[_options(arg)["scale"]]["batch_size"]
  times = [_run_seconds(p, b) for p in sweep(arg)]
  return {"total_s": sum(times), "sittings": -(-sum(times) // SITTING_S), "longest_run_s": max(times),
          "runs": len(times)}


def law_e_crit(size: str, unique: float) -> float:
  """The published law's epochs at the crossing for this size (6 N D with N counting the embedding
  at V = 8192, the paper's convention): E_crit = C_crit / (6 N U)."""
  from analysis.findings import critical  # pylint: disable=g-import-not-at-top
  n = sizes.nominal_params(size) + SETTINGS["cluster"]["data.vocab_size"] * sizes.shape(size).d_model
  return float(critical.published_c_crit(unique)) / flops.train_flops_6nd(n, unique)


def base_config(scale: str) -> ml_collections.ConfigDict:
  return grid.apply_overrides(grid.scale_config("test" if scale == "test" else "cluster"), SETTINGS[scale])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  return grid.apply_overrides(base_config(o["scale"]), sweep(arg)[0])
