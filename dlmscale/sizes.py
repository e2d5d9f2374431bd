"""The model-size ladder: one name per shape, shared by configs, launchers and analysis.

Names state the approximate non-embedding parameter count (attention + SwiGLU MLP + norms),
so a grid's run names read as a scaling axis. `tests/test_sizes.py` checks each name against
the exact count from `dlmscale.flops`. Head dimension is 32 below d_model 256 and 64 above.
"""

from __future__ import annotations

import dataclasses

from dlmscale.errors import UserError


@dataclasses.dataclass(frozen=True)
class Shape:
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int


LADDER: dict[str, Shape] = {
    "s0.1M": Shape(d_model=64, n_layers=2, n_heads=2, d_ff=192),
    "s0.2M": Shape(d_model=64, n_layers=4, n_heads=2, d_ff=192),
    "s0.4M": Shape(d_model=96, n_layers=4, n_heads=3, d_ff=256),
    "s1M": Shape(d_model=128, n_layers=5, n_heads=4, d_ff=352),
    "s3M": Shape(d_model=192, n_layers=6, n_heads=6, d_ff=512),
    "s10M": Shape(d_model=256, n_layers=12, n_heads=4, d_ff=688),
    "s25M": Shape(d_model=384, n_layers=14, n_heads=6, d_ff=1024),
    "s50M": Shape(d_model=512, n_layers=16, n_heads=8, d_ff=1376),
    "s100M": Shape(d_model=640, n_layers=20, n_heads=10, d_ff=1728),
    "s250M": Shape(d_model=1024, n_layers=20, n_heads=16, d_ff=2752),
    "s500M": Shape(d_model=1280, n_layers=26, n_heads=20, d_ff=3456),
    "s1B": Shape(d_model=1792, n_layers=26, n_heads=28, d_ff=4800),
}


def nominal_params(name: str) -> float:
  """The count a ladder name promises, e.g. 's0.4M' -> 4e5."""
  body = name.removeprefix("s")
  scale = {"K": 1e3, "M": 1e6, "B": 1e9}[body[-1]]
  return float(body[:-1]) * scale


def shape(name: str) -> Shape:
  """Looks up a ladder entry; an unknown name lists the valid ones."""
  if name not in LADDER:
    raise UserError(
        f"unknown model size {name!r}; choose one of {', '.join(LADDER)} "
        "(or set config.model_size='custom' and the config.model.* fields)")
  return LADDER[name]
