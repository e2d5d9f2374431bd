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


def law_context(b: dict) -> str:
  """What the published law itself implies at this U, stated beside every comparison with it: its
  epochs at the crossing, E_crit = C_crit / (6 N U), per size run, and the range it was fitted on."""
  e = b.get("law_e_crit") or {}
  per_size = ", ".join(f"{v:.3g} epochs at {k}" for k, v in e.items())
  return (f"the law's own E_crit = C_crit / (6 N U) is {per_size or 'not computed'}; "
          f"it was fitted on {b.get('law_fitted_range', 'U = 25M-100M')}")


def published_line(b: dict) -> str | None:
  """One budget against the published law, in its convention (6ND, N with the embedding), with the
  other convention's range and the law's own E_crit and fitted range beside it; None without one."""
  pub, rng = b.get("published_c_crit_6nd"), b.get("c_range_6nd")
  if pub is None or not rng:
    return None
  other = (b.get("other_convention") or {}).get("c_range_6nd")
  alt = f" ({other[0]:.3g}–{other[1]:.3g} without the embedding)" if other else ""
  return (f"  - against the published law: C_crit = {pub:.3g} FLOPs in {b.get('flops', '6ND')}, "
          f"{b.get('published_in_range')} the range run there, {rng[0]:.3g}–{rng[1]:.3g}{alt}; "
          f"{law_context(b)}.")
