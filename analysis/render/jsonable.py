"""Plain-JSON conversion for results that mix numpy and Python values."""

from __future__ import annotations

import math

import numpy as np


def to_jsonable(obj):
  """numpy scalars/arrays to Python, NaN and inf to None (JSON has neither), tuples to lists."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return to_jsonable(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    v = float(obj)
    return v if math.isfinite(v) else None
  if isinstance(obj, np.bool_):
    return bool(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  return obj
