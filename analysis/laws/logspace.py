"""The log-space pieces every law's fit shares: the robust loss of log residuals and a stable
logsumexp (Hoffmann et al.; Besiroglu et al.).

Residuals are log(predicted) - log(observed); the Huber loss (delta = 1e-3) is quadratic only for
residuals under 0.1%, so a few bad points cannot drag the fit. Objectives are SUMMED over points,
which is what the published objective values (1.01827e-3, 0.0158259) refer to.
"""

from __future__ import annotations

import numpy as np

DELTA = 1e-3


def huber_and_grad(r: np.ndarray, delta: float = DELTA) -> tuple[np.ndarray, np.ndarray]:
  """scipy.special.huber(delta, r) (r^2/2 inside delta, delta (|r| - delta/2) outside) and its
  derivative, at the cost of one clip: with c = clip(r), huber = c (r - c/2) and the derivative is c."""
  c = np.clip(r, -delta, delta)
  return c * (r - 0.5 * c), c


def logsumexp_softmax(*z: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
  """log(sum exp z_k) and the weights exp(z_k - lse), stably, for same-shape arrays."""
  m = z[0]
  for zk in z[1:]:
    m = np.maximum(m, zk)
  ez = [np.exp(zk - m) for zk in z]
  total = ez[0]
  for ek in ez[1:]:
    total = total + ek
  inv = 1.0 / total
  return m + np.log(total), [ek * inv for ek in ez]
