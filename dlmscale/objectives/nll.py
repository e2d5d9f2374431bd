"""The NLL primitive both families share: -log p(target) with the `<mask>` id out of the support.

Neither family ever predicts the reserved `<mask>` id (the last vocabulary entry): its logit is set
to -inf before log_softmax, so both distribute mass over the same V - 1 tokens and their numbers
are comparable.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]


def token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array, mask_id: int | None = None
              ) -> jax.Array:
  """-log p(target) in float32 with the mask id removed from the support (default: last id)."""
  return _token_nll(logits_BxLxV, targets_BxL, logits_BxLxV.shape[-1] - 1 if mask_id is None
                    else int(mask_id))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _token_nll(logits_BxLxV: jax.Array, targets_BxL: jax.Array, mask_id: int) -> jax.Array:
  """Cross-entropy with its gradient written out as softmax - onehot in one elementwise pass.

  Autodiff of log_softmax + take_along_axis scatters the target gradient into a fresh [B, L, V]
  array and fuses three [B, L, V] operands into a transposed copy for the embedding gradient: a
  third of a CPU step at d_model 64 (BENCHMARKS.md). Picking the target with a one-hot compare
  instead of a gather keeps forward and backward free of scatter/gather.
  """
  return _token_nll_fwd(logits_BxLxV, targets_BxL, mask_id)[0]


def _target_logit(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """logits[..., target] through a one-hot compare: a fused reduction, not a gather."""
  vocab_V = jnp.arange(logits_BxLxV.shape[-1])
  return jnp.sum(jnp.where(vocab_V == targets_BxL[..., None], logits_BxLxV, 0.0), axis=-1)


def _token_nll_fwd(logits_BxLxV, targets_BxL, mask_id):
  logits = logits_BxLxV.astype(jnp.float32)
  logits = jnp.where(jnp.arange(logits.shape[-1]) == mask_id, -jnp.inf, logits)
  max_BxL = jnp.max(logits, axis=-1)  # no stop_gradient needed: the backward is _token_nll_bwd
  lse_BxL = max_BxL + jnp.log(jnp.sum(jnp.exp(logits - max_BxL[..., None]), axis=-1))
  return lse_BxL - _target_logit(logits, targets_BxL), (logits_BxLxV, lse_BxL, targets_BxL)


def _token_nll_bwd(mask_id, res, d_nll_BxL):
  logits_BxLxV, lse_BxL, targets_BxL = res
  vocab_V = jnp.arange(logits_BxLxV.shape[-1])
  p_BxLxV = jnp.where(vocab_V == mask_id, 0.0,
                      jnp.exp(logits_BxLxV.astype(jnp.float32) - lse_BxL[..., None]))
  onehot_BxLxV = (vocab_V == targets_BxL[..., None]).astype(jnp.float32)
  d_logits = d_nll_BxL[..., None] * (p_BxLxV - onehot_BxLxV)
  return d_logits.astype(logits_BxLxV.dtype), None


_token_nll.defvjp(_token_nll_fwd, _token_nll_bwd)


def top1_correct(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
  """Whether the target has the largest logit (argmax without the variadic reduce that argmax
  compiles to, which alone cost 9% of a CPU AR step at d_model 64; ties count as correct)."""
  return _target_logit(logits_BxLxV, targets_BxL) >= jnp.max(logits_BxLxV, axis=-1)
