"""When a fit cannot be trusted: the checks that turn a degenerate optimum into "not identifiable".

A least-squares optimum always exists; whether the data pin it down is another matter. Three signs
that they do not, each of which has produced headline numbers from noise:
  - a parameter on a search bound (alpha = 5 makes A / N^alpha vanish: the size term is gone);
  - an irreducible loss E below 1e-3 nats (E ~ 0 means the law is extrapolating to perfection);
  - a bootstrap interval of zero width (the resampled fits never moved from their start: the
    objective is flat in that direction, so the value is the start's, not the data's).
A fit with any of them never enters a headline, a ratio or a plot as a number.
"""

from __future__ import annotations

import math

import numpy as np

E_MIN = 1e-3  # nats: an irreducible loss below this is not a measurement
_REL_WIDTH = 1e-9  # an interval narrower than this (relative) has zero width


def bound_reasons(params: dict[str, float], free, lower, upper, tol: float = 1e-3) -> list[str]:
  """`name = value on its lower/upper bound` for each free parameter within tol of a bound."""
  out = []
  for name, lo, hi in zip(free, lower, upper):
    v = params.get(name)
    if v is None or not math.isfinite(v):
      continue
    label, shown = _display(name, v)
    if math.isfinite(hi) and v >= hi - tol:
      out.append(f"{label} = {shown} is on its upper bound")
    elif math.isfinite(lo) and v <= lo + tol:
      out.append(f"{label} = {shown} is on its lower bound")
  return out


def e_reason(params: dict[str, float]) -> list[str]:
  e = params.get("E", math.exp(params["e"]) if "e" in params else None)
  if e is not None and e < E_MIN:
    return [f"E = {e:.3g} nats is below {E_MIN:g} (no irreducible loss left: the law is extrapolating)"]
  return []


def exponent_reasons(params: dict[str, float]) -> list[str]:
  """A non-positive exponent: the term grows with scale, or its constant is meaningless."""
  return [f"{k} = {params[k]:.3g} is not positive" for k in ("alpha", "beta")
          if k in params and not params[k] > 0]


def zero_width_reasons(ci: dict[str, tuple[float, float]] | None, names) -> list[str]:
  """Parameters whose bootstrap percentile interval has zero width."""
  out = []
  for name in names:
    if not ci or name not in ci:
      continue
    lo, hi = ci[name]
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo <= _REL_WIDTH * max(1.0, abs(lo), abs(hi)):
      label, shown = _display(name, lo)
      out.append(f"the bootstrap interval of {label} has zero width ({shown}: resamples never moved it)")
  return out


def _display(name: str, v: float) -> tuple[str, str]:
  """rd / rn are log R_D*, log R_N*: shown as the stars themselves."""
  if name in ("rd", "rn"):
    return ("R_D*" if name == "rd" else "R_N*"), f"{np.exp(v):.3g}"
  return name, f"{v:.3g}"


def ratio_interval(samples_a: np.ndarray, samples_b: np.ndarray, level: float = 0.95
                   ) -> tuple[float, float] | None:
  """Percentile interval of a / b from independent resamples of the two (paired by index)."""
  k = min(samples_a.size, samples_b.size)
  if k < 2:
    return None
  q = samples_a[:k] / samples_b[:k]
  lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
  return float(np.percentile(q, lo_q)), float(np.percentile(q, hi_q))


def ratio_verdict(ci: tuple[float, float] | None) -> str:
  """'above 1' / 'below 1' when the interval excludes 1, else 'inconclusive' (or no interval)."""
  if ci is None:
    return "no interval"
  lo, hi = ci
  if lo > 1.0:
    return "above 1"
  if hi < 1.0:
    return "below 1"
  return "inconclusive"
