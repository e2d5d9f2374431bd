"""Double-descent sweeps for both objectives: model-wise (every size at one fixed U and E) and
epoch-wise (one size, one U, many epochs). A point shared by both sweeps runs once.

  --config=configs/doubledescent.py:scale=cpu                 both sweeps
  --config=configs/doubledescent.py:scale=cpu,mode=epoch,epoch_size=s1M

Argument keys: scale (test|cpu|cluster), mode (model|epoch|both), objectives, seeds;
model-wise: model_sizes, model_unique, model_epochs; epoch-wise: epoch_size, epoch_unique,
epoch_list (lists joined with '+'; counts accept k/M/B).
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid

AXES: dict[str, dict[str, Any]] = {
    "test": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                 model_sizes=["s0.1M", "s0.4M"], model_unique=20_000, model_epochs=1.0,
                 epoch_size="s0.1M", epoch_unique=20_000, epoch_list=[1.0, 2.0]),
    "cpu": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                model_sizes=["s0.1M", "s0.4M", "s1M", "s3M"], model_unique=250_000, model_epochs=16.0,
                epoch_size="s0.4M", epoch_unique=250_000,
                epoch_list=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
    "cluster": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                    model_sizes=["s10M", "s25M", "s50M", "s100M", "s250M", "s500M", "s1B"],
                    model_unique=25_000_000, model_epochs=50.0,
                    epoch_size="s100M", epoch_unique=25_000_000,
                    epoch_list=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
}
MODES = ("model", "epoch", "both")


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg)
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  if opts["mode"] not in MODES:
    raise grid.UserError(f"doubledescent mode={opts['mode']!r}; choose one of {', '.join(MODES)}")
  grid.check_sizes([*opts["model_sizes"], opts["epoch_size"]])
  return opts


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  points = []
  for seed, obj in itertools.product(o["seeds"], o["objectives"]):
    if o["mode"] in ("model", "both"):
      points += [grid.point(obj, size, o["model_unique"], o["model_epochs"], seed, o["scale"])
                 for size in o["model_sizes"]]
    if o["mode"] in ("epoch", "both"):
      points += [grid.point(obj, o["epoch_size"], o["epoch_unique"], e, seed, o["scale"])
                 for e in o["epoch_list"]]
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  return grid.apply_overrides(grid.scale_config(o["scale"]), sweep(arg)[0])
