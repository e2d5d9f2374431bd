"""Masking schedules for absorbing-state diffusion, as small objects with alpha(t) and its derivative.

alpha(t) is the probability that a token is still clean at time t in [0, 1] (alpha(0) = 1,
alpha(1) = 0), so each token is masked with probability 1 - alpha(t). The continuous-time ELBO
weights the masked-token cross-entropy by w(t) = -alpha'(t) / (1 - alpha(t)) (Shi et al. 2024, MD4;
Sahoo et al. 2024, MDLM). Each schedule writes 1 - alpha(t) and w(t) in closed form because the
naive expressions lose precision (or divide 0 by 0) near t = 0, where the weight is largest.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp

from dlmscale.errors import UserError

SCHEDULES = ("linear", "cosine", "poly")


class Schedule(Protocol):
  """What the objectives need from a schedule; every method is elementwise in t."""

  def alpha(self, t: jax.Array) -> jax.Array: ...
  def dalpha(self, t: jax.Array) -> jax.Array: ...
  def mask_prob(self, t: jax.Array) -> jax.Array: ...  # 1 - alpha(t)
  def weight(self, t: jax.Array) -> jax.Array: ...  # -alpha'(t) / (1 - alpha(t))


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
  """alpha = 1 - t: mask rate equals t and the ELBO weight is 1/t (the default)."""

  def alpha(self, t):
    return 1.0 - t

  def dalpha(self, t):
    return -jnp.ones_like(t)

  def mask_prob(self, t):
    return t

  def weight(self, t):
    return 1.0 / t


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
  """alpha = 1 - cos(pi/2 (1 - t)), i.e. mask rate sin(pi t / 2), as in MD4."""

  def alpha(self, t):
    return 1.0 - jnp.sin(0.5 * math.pi * t)

  def dalpha(self, t):
    return -0.5 * math.pi * jnp.cos(0.5 * math.pi * t)

  def mask_prob(self, t):
    return jnp.sin(0.5 * math.pi * t)

  def weight(self, t):
    return 0.5 * math.pi / jnp.tan(0.5 * math.pi * t)


@dataclasses.dataclass(frozen=True)
class PolySchedule:
  """alpha = 1 - t**p: mask rate t**p and weight p/t; p > 1 masks less early on."""

  exponent: float = 2.0

  def alpha(self, t):
    return 1.0 - t**self.exponent

  def dalpha(self, t):
    return -self.exponent * t**(self.exponent - 1.0)

  def mask_prob(self, t):
    return t**self.exponent

  def weight(self, t):
    return self.exponent / t


def make_schedule(name: str, poly_exponent: float = 2.0) -> Schedule:
  """The schedule called `name`; an unknown name lists the valid ones."""
  if name == "linear":
    return LinearSchedule()
  if name == "cosine":
    return CosineSchedule()
  if name == "poly":
    if not poly_exponent > 0:
      raise UserError(f"poly_exponent={poly_exponent} must be > 0")
    return PolySchedule(float(poly_exponent))
  raise UserError(
      f"unknown masking schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
