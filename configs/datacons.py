"""The data-constrained study: both objectives x model sizes x unique budgets U x epochs E.

The design of Prabhudesai et al. 2025 ("Diffusion beats autoregressive in data-constrained
settings"): every size is trained on nested unique budgets repeated for 1 to hundreds of epochs, so
a fit can separate the value of repeated tokens from fresh ones (R_D*) for each family.

  --config=configs/datacons.py:scale=cpu                    the whole CPU grid
  --config=configs/datacons.py:scale=cluster,sizes=s10M+s50M,epochs=1+4+16,seeds=0+1
  --config=configs/datacons.py:scale=cpu,objectives=mdm,sizes=s1M,unique=1M,epochs=16,max_flops=0
                                                            one run (above the CPU FLOP cap)

Argument keys: scale (test|cpu|cluster), objectives, sizes, unique, epochs, seeds (lists joined
with '+'; counts accept k/M/B), max_flops (skip points above 6*N*U*E; 0 = keep all).
get_config(arg) is the config of the grid's first point; sweep(arg) lists every point's overrides.
Learning rates per size: configs/grid.py LR_BY_SIZE.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid
from dlmscale.model import flops

AXES: dict[str, dict[str, Any]] = {
    "test": dict(objectives=["ar", "mdm"], sizes=["s0.1M"], unique=[20_000], epochs=[1.0, 2.0],
                 seeds=[0], max_flops=0.0),
    # 64 points before the cap; max_flops (6 N U E, non-embedding N) keeps the 36 below 2e13, about
    # 1.1e8 training tokens in all: a few hours on a laptop. max_flops=0 restores the full product.
    "cpu": dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.4M", "s1M", "s3M"],
                unique=[250_000, 1_000_000], epochs=[1.0, 4.0, 16.0, 64.0], seeds=[0], max_flops=2e13),
    "cluster": dict(objectives=["ar", "mdm"],
                    sizes=["s10M", "s25M", "s50M", "s100M", "s250M", "s500M", "s1B"],
                    unique=[25_000_000, 50_000_000, 100_000_000],
                    epochs=[1.0, 2.0, 4.0, 10.0, 20.0, 50.0, 100.0, 200.0, 400.0, 800.0],
                    seeds=[0], max_flops=0.0),
}


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg)
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  grid.check_sizes(opts["sizes"])
  return opts


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  points = []
  for seed, u, e, size, obj in itertools.product(o["seeds"], o["unique"], o["epochs"], o["sizes"],
                                                 o["objectives"]):
    if o["max_flops"] and flops.nominal_train_flops(size, u * e) > o["max_flops"]:
      continue
    points.append(grid.point(obj, size, u, e, seed, o["scale"]))
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  points = sweep(arg)
  if not points:
    raise grid.UserError(f"datacons:{arg} has no points (max_flops={o['max_flops']:g} drops them all)")
  return grid.apply_overrides(grid.scale_config(o["scale"]), points[0])
