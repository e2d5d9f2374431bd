"""The AR token-order ablation (Prabhudesai et al. 2025, Sec. 6): AR trained on N seeded token
orders per sequence (config.ar.num_orders, dlmscale/objectives/orders.py) at one size, one unique budget U
and many epochs E, beside the diffusion run of the same size and budget. If diffusion's advantage
under repetition comes from the orders its masks expose, the AR curves should lose less to
repetition as N grows; every run is evaluated left to right, so the numbers compare directly.

  --config=configs/orders.py:scale=cpu                              N = 1, 2, 4, 16 and diffusion
  --config=configs/orders.py:scale=cluster,orders=1+16,mdm=false,seeds=0+1

Argument keys: scale (test|cpu|cluster), size, unique, epochs, orders ('+'-joined N values),
mdm (true: add the diffusion reference run), seeds. Each run evaluates ~EVALS_PER_RUN times, so
one run also gives its own loss-vs-epoch curve. Run names: ar-SIZE-uU-eE-seedS-oN for AR with N
orders (-o1 is plain AR), the usual mdm-SIZE-uU-eE-seedS for diffusion.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import grid

AXES: dict[str, dict[str, Any]] = {
    "test": dict(size="s0.1M", unique=20_000, epochs=4.0, orders=[1, 2, 4, 16], mdm=True, seeds=[0]),
    # 25M tokens a run (~6e13 FLOPs at s0.4M): tens of minutes each on a laptop CPU.
    "cpu": dict(size="s0.4M", unique=250_000, epochs=100.0, orders=[1, 2, 4, 16], mdm=True, seeds=[0]),
    # 100 epochs, as the paper's ablation reports its N = 16 result at.
    "cluster": dict(size="s100M", unique=100_000_000, epochs=100.0, orders=[1, 2, 4, 16], mdm=True,
                    seeds=[0]),
}


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg)
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  grid.check_sizes([opts["size"]])
  if not opts["orders"] or any(n < 1 for n in opts["orders"]):
    raise grid.UserError(f"orders={opts['orders']}: give N values >= 1 joined with '+', e.g. orders=1+4+16")
  return opts


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  points = []
  for seed in o["seeds"]:
    for n in o["orders"]:
      p = grid.point("ar", o["size"], o["unique"], o["epochs"], seed, o["scale"], **{"ar.num_orders": int(n)})
      points.append({**p, "run_name": f"{p['run_name']}-o{int(n)}"})
    if o["mdm"]:
      points.append(grid.point("mdm", o["size"], o["unique"], o["epochs"], seed, o["scale"]))
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  return grid.apply_overrides(grid.scale_config(o["scale"]), sweep(arg)[0])
