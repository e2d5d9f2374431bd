"""WSD trunks with cooldown branches: per (objective, size, U, seed) one constant-rate trunk and one
branch per epoch count, each branch the standalone WSD run of its length (configs/grid.py
wsd_family), so one trunk serves every epoch count and each E's point is annealed.

  python -m launch.local --config=configs/wsd.py:scale=test --workdir=runs/wsd_test
  python -m launch.local --config=configs/wsd.py:scale=cpu,sizes=s0.1M+s0.2M,epochs=1+4+16 --workdir=...

The launcher starts a branch once its trunk has saved the checkpoint at the branch's start
(launch/branches.py); `python -m launch.manifest --workdir=DIR` shows which trunk each branch
grows from. Argument keys: scale (test|cpu|cluster), objectives, sizes, unique, epochs, seeds (lists
joined with '+'), decay_frac (each branch's cooldown, as a fraction of its own steps), cosine
(true: instead, one cosine run per epoch count, the grid that branches replace: bench/grid_bench.py
--branches compares the two), study (true: the CPU study's shapes and learning rates,
configs/cpu_study.py SETTINGS, at these axes).
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import cpu_study, grid

AXES: dict[str, dict[str, Any]] = {
    "test": dict(objectives=["ar", "mdm"], sizes=["s0.1M"], unique=[10_000], epochs=[1.0, 2.0]),
    "cpu": dict(objectives=["ar", "mdm"], sizes=["s0.1M", "s0.4M"], unique=[51_200],
                epochs=[1.0, 2.0, 4.0, 8.0, 16.0]),
    "cluster": dict(objectives=["ar", "mdm"], sizes=["s10M", "s50M"], unique=[25_000_000],
                    epochs=[1.0, 4.0, 16.0, 64.0]),
}
COMMON: dict[str, Any] = dict(seeds=[0], decay_frac=0.2, cosine=False, study=False)


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg, default="test")
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale], **COMMON})
  grid.check_sizes(opts["sizes"])
  return opts


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  shape = ({"batch_size": cpu_study.SETTINGS["batch_size"], "seq_len": cpu_study.SETTINGS["data.seq_len"]}
           if o["study"] else {})
  lr_mult = cpu_study.lr_multipliers() if o["study"] else {"ar": 1.0, "mdm": 1.0}
  points = []
  for seed, u, size, obj in itertools.product(o["seeds"], o["unique"], o["sizes"], o["objectives"]):
    lr = {"optim.lr": grid.LR_BY_SIZE[size] * lr_mult[obj]}
    if o["cosine"]:
      points += [grid.point(obj, size, u, e, seed, o["scale"], **lr, **{"optim.schedule": "cosine"})
                 for e in o["epochs"]]
    else:
      points += grid.wsd_family(obj, size, u, o["epochs"], seed, o["scale"], decay_frac=o["decay_frac"],
                                **shape, **lr)
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  base = cpu_study.base_config() if o["study"] else grid.scale_config(o["scale"])
  return grid.apply_overrides(base, sweep(arg)[0])
