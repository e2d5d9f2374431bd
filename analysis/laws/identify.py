"""When a fit cannot be trusted: the checks that turn a degenerate optimum into "not identifiable".

A least-squares optimum always exists; whether the data pin it down is another matter. Four signs
that they do not, each of which has produced headline numbers from noise:
  - a parameter on a search bound (alpha = 5 makes A / N^alpha vanish: the size term is gone;
    alpha = 0.001 makes it a constant that E absorbs);
  - an irreducible loss E below 1e-3 nats (E ~ 0 means the law is extrapolating to perfection);
  - a bootstrap interval of zero width (the resampled fits never moved from their start: the
    objective is flat in that direction, so the value is the start's, not the data's);
  - an exponent whose bootstrap SE exceeds its value, or whose interval spans most of its range.
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


def exponent_reasons(params: dict[str, float], tol: float = 1e-3) -> list[str]:
  """A non-positive exponent (the term grows with scale, or its constant is meaningless), or one
  within tol of 0, its natural lower bound: N^-0.0009 is a constant over any grid, so A merges
  into E and the exponent (and the allocation built on it) is not a measurement."""
  out = []
  for k in ("alpha", "beta"):
    if k not in params:
      continue
    if not params[k] > 0:
      out.append(f"{k} = {params[k]:.3g} is not positive")
    elif params[k] <= tol:
      out.append(f"{k} = {params[k]:.3g} is on its lower bound (0: its term is a constant)")
  return out


def spread_reason(name: str, value: float, se: float | None, ci: tuple[float, float] | None,
                  allowed: tuple[float, float] | None = None, frac: float = 0.5) -> str | None:
  """Why the bootstrap does not pin an exponent down, or None: its SE exceeds its value (not even
  its size is known), or its 95% interval spans more than `frac` of the range it may take."""
  if se is not None and math.isfinite(value) and (not math.isfinite(se) or se > abs(value)):
    return f"the bootstrap SE of {name} ({se:.3g}) exceeds its value ({value:.3g})"
  if ci is None or allowed is None or None in ci:
    return None
  lo, hi = ci
  width = allowed[1] - allowed[0]
  if math.isfinite(lo) and math.isfinite(hi) and hi - lo > frac * width:
    return (f"the 95% interval of {name} ({lo:.3g}–{hi:.3g}) spans {(hi - lo) / width:.0%} of "
            f"its range ({allowed[0]:g}–{allowed[1]:g})")
  return None


def spread_reasons(params: dict[str, float], boot: dict | None,
                   allowed: dict[str, tuple[float, float]]) -> list[str]:
  """spread_reason for each exponent in `allowed` that the fit has, from a bootstrap summary."""
  if not boot:
    return []
  out = []
  for name, rng in allowed.items():
    if name in params:
      why = spread_reason(name, params[name], boot.get("se", {}).get(name),
                          boot.get("ci", {}).get(name), rng)
      out += [why] if why else []
  return out


def zero_width_reasons(ci: dict[str, tuple[float, float]] | None, names) -> list[str]:
  """Parameters whose bootstrap percentile interval has zero width, each once (rd and R_D_star
  are one quantity, in logs and not)."""
  out, seen = [], set()
  for name in names:
    if not ci or name not in ci:
      continue
    lo, hi = ci[name]
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo <= _REL_WIDTH * max(1.0, abs(lo), abs(hi)):
      label, shown = _display(name, lo)
      if label not in seen:
        seen.add(label)
        out.append(f"the bootstrap interval of {label} has zero width ({shown}: resamples never moved it)")
  return out


def _display(name: str, v: float) -> tuple[str, str]:
  """rd / rn are log R_D*, log R_N*: shown as the stars themselves."""
  if name in ("rd", "rn"):
    return ("R_D*" if name == "rd" else "R_N*"), f"{np.exp(v):.3g}"
  if name in ("R_D_star", "R_N_star"):
    return name.replace("_star", "*"), f"{v:.3g}"
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
