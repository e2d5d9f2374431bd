"""Single-epoch isoFLOP grids, per objective: for each compute budget C, every size N the budget
can train for D = C / (6 N) fresh tokens (U = D, E = 1). Loss minima along each C give the
compute-optimal N and D (Chinchilla approach 2); all points together feed the parametric fit
L(N, D) (approach 3).

  --config=configs/isoflop.py:scale=cpu
  --config=configs/isoflop.py:scale=cluster,objectives=mdm,budgets=1e18+1e19

Argument keys: scale (test|cpu|cluster), objectives, sizes, budgets (FLOPs, '+'-joined), seeds,
min_tpp / max_tpp (keep points whose tokens per parameter D/N lies in the range: the ends of a
profile far from its minimum add runs but no information), max_tokens (the corpus's training
tokens: one epoch cannot use more; 0 = no limit). N is the ladder's nominal non-embedding count;
D is rounded to 3 significant digits so run names state it exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid

AXES: dict[str, dict[str, Any]] = {
    "test": dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.4M"], budgets=[3e9], seeds=[0],
                 min_tpp=0.0, max_tpp=0.0, max_tokens=0.0),
    # The python-stdlib corpus holds about 9M training tokens at vocab 2048, hence max_tokens.
    "cpu": dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.4M", "s1M", "s3M"],
                budgets=[1e12, 3e12, 1e13, 3e13], seeds=[0], min_tpp=0.5, max_tpp=1000.0,
                max_tokens=8e6),
    "cluster": dict(objectives=["ar", "mdm"],
                    sizes=["s10M", "s25M", "s50M", "s100M", "s250M", "s500M", "s1B"],
                    budgets=[1e18, 3e18, 1e19, 3e19, 1e20], seeds=[0], min_tpp=1.0, max_tpp=1000.0,
                    max_tokens=0.0),
}


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg)
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  grid.check_sizes(opts["sizes"])
  return opts


def _keep(o: dict[str, Any], size: str, tokens: int) -> bool:
  s = grid.SCALES[o["scale"]]
  tpp = tokens / grid.sizes.nominal_params(size)
  return (tokens >= s["batch_size"] * s["data.seq_len"]  # at least one step
          and (not o["min_tpp"] or tpp >= o["min_tpp"])
          and (not o["max_tpp"] or tpp <= o["max_tpp"])
          and (not o["max_tokens"] or tokens <= o["max_tokens"]))


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  points = []
  for seed, budget, size, obj in itertools.product(o["seeds"], o["budgets"], o["sizes"], o["objectives"]):
    tokens = grid.round_sig(budget / (6.0 * grid.sizes.nominal_params(size)))
    if _keep(o, size, tokens):
      points.append(grid.point(obj, size, tokens, 1.0, seed, o["scale"]))
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  points = sweep(arg)
  if not points:
    raise grid.UserError(f"isoflop:{arg} has no points: widen budgets, sizes or the min_tpp/max_tpp range")
  return grid.apply_overrides(grid.scale_config(o["scale"]), points[0])
