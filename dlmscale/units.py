"""Counts written with an SI suffix: one formatter, because run names are made with it.

Run names (`ar-s0.1M-u12.8k-e32-seed0`) are directory names that finished studies already hold, so
the text this writes for a value must never change; the grid files (configs/grid.py) and the report
(analysis/fmt.py) both import it from here.
"""

from __future__ import annotations


def human(x: float) -> str:
  """1_000_000 -> '1M', 250_000 -> '250k', 1_670_000 -> '1.67M', 16.0 -> '16', 0.5 -> '0.5'."""
  for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.6g}{suffix}"
  return f"{x:.6g}"
