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


def chunked_nll(hidden_BxLxD: jax.Array, head_VxD: jax.Array, targets_BxL: jax.Array,
                mask_id: int | None, chunk: int) -> tuple[jax.Array, jax.Array]:
  """token_nll and top1_correct of logits = hidden @ head.T, `chunk` positions at a time.

  A lax.scan over sequence chunks whose body is rematerialised (jax.checkpoint): the forward keeps
  only each chunk's inputs, and the backward recomputes one chunk's [B, chunk, V] logits at a time,
  so neither pass ever holds the full [B, L, V] logits. Logits are in the hidden states' dtype (the
  compute dtype: bf16 where the model computes in bf16), the NLL in float32 as token_nll does.
  A length that `chunk` does not divide is padded; the padding is dropped from the outputs.
  """
  B, L, D = hidden_BxLxD.shape
  mask_id = head_VxD.shape[0] - 1 if mask_id is None else int(mask_id)
  n = -(-L // chunk)
  pad = n * chunk - L
  if pad:
    hidden_BxLxD = jnp.pad(hidden_BxLxD, ((0, 0), (0, pad), (0, 0)))
    targets_BxL = jnp.pad(targets_BxL, ((0, 0), (0, pad)))
  h_NxBxCxD = jnp.moveaxis(hidden_BxLxD.reshape(B, n, chunk, D), 1, 0)
  t_NxBxC = jnp.moveaxis(targets_BxL.reshape(B, n, chunk), 1, 0)

  @jax.checkpoint
  def one_chunk(h_BxCxD, t_BxC):
    logits_BxCxV = jnp.einsum("BCD,VD->BCV", h_BxCxD, head_VxD)
    correct_BxC = jax.lax.stop_gradient(top1_correct(logits_BxCxV, t_BxC))
    return _token_nll(logits_BxCxV, t_BxC, mask_id), correct_BxC

  _, (nll_NxBxC, correct_NxBxC) = jax.lax.scan(
      lambda carry, xs: (carry, one_chunk(*xs)), None, (h_NxBxCxD, t_NxBxC))
  unchunk = lambda x: jnp.moveaxis(x, 0, 1).reshape(B, n * chunk)[:, :L]
  return unchunk(nll_NxBxC), unchunk(correct_NxBxC)


def nll_and_correct(params: Params, apply_fn: ApplyFn, inputs_BxL: jax.Array, targets_BxL: jax.Array,
                    mask_id: int | None, chunk: int, **positions) -> tuple[jax.Array, jax.Array]:
  """Per-position -log p(target) and top-1 correctness of the model on inputs_BxL, through the full
  logits (chunk 0) or chunked_nll (chunk > 0, the model returning hidden states)."""
  if not chunk:
    logits_BxLxV = apply_fn(params, inputs_BxL, **positions)
    return token_nll(logits_BxLxV, targets_BxL, mask_id), top1_correct(logits_BxLxV, targets_BxL)
  hidden_BxLxD, head_VxD = apply_fn(params, inputs_BxL, hidden=True, **positions)
  return chunked_nll(hidden_BxLxD, head_VxD, targets_BxL, mask_id, chunk)


def next_token_targets(tokens_BxL: jax.Array) -> jax.Array:
  """Position i's target is token i + 1; the last position gets a dummy (token 0), never scored."""
  return jnp.concatenate([tokens_BxL[:, 1:], tokens_BxL[:, :1]], axis=1)
