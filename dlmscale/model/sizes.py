"""The model-size ladder: one name per shape, shared by configs, launchers and analysis.

Names state the approximate non-embedding parameter count (attention + SwiGLU MLP + norms),
so a grid's run names read as a scaling axis. `tests/test_sizes.py` checks each name against
the exact count from `dlmscale.model.flops`. Head dimension is 32 below d_model 256 and 64 above.
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


# name   d_model n_layers n_heads d_ff
_LADDER_TABLE = """
s0.1M     64   2   2   192
s0.2M     64   4   2   192
s0.4M     96   4   3   256
s1M      128   5   4   352
s3M      192   6   6   512
s10M     256  12   4   688
s25M     384  14   6  1024
s50M     512  16   8  1376
s100M    640  20  10  1728
s250M   1024  20  16  2752
s500M   1280  26  20  3456
s1B     1792  26  28  4800
"""
LADDER: dict[str, Shape] = {
    name: Shape(*map(int, dims)) for name, *dims in map(str.split, _LADDER_TABLE.strip().splitlines())}


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
