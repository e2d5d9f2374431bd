"""How the report, the plots and the planner write numbers: one formatter per kind of number."""

from __future__ import annotations

import math

from dlmscale.units import human

tok = human  # a token count as run names write it (25.6k, 1M, 2B): the one formatter, dlmscale/units.py

FAM = {"ar": "AR", "mdm": "MDM"}


def pm(value, se, digits: int = 3) -> str:
  """value ± se, or the value alone when there is no error, or n/a."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "n/a"
  if se is None or not math.isfinite(se) or se == 0:
    return f"{value:.{digits}f}"
  return f"{value:.{digits}f} ± {se:.{digits}f}"


def fam(objective) -> str:
  return FAM.get(objective, str(objective))


def num(v, spec: str = ".3g") -> str:
  """v formatted, or n/a where it is missing (JSON null, NaN)."""
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "n/a"
  return format(v, spec)
