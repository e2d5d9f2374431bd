"""The autoregressive objective: exact next-token NLL.

The model runs on all L positions (the same shapes and FLOPs as the diffusion denoiser) and the
logits at positions 0..L-2 predict tokens 1..L-1, so a sequence gives L - 1 predictions; the first
token is never scored. The loss and the per-sequence eval are means over those L - 1 predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlmscale.objectives.nll import (ApplyFn, Params, next_token_targets, nll_and_correct, token_nll,
                                     top1_correct)


def _chunked(params, apply_fn, tokens_BxL, mask_id, loss_chunk, **positions):
  """NLL and correctness of the L - 1 next-token predictions through the chunked loss."""
  nll_BxL, correct_BxL = nll_and_correct(params, apply_fn, tokens_BxL, next_token_targets(tokens_BxL),
                                         mask_id, loss_chunk, **positions)
  return nll_BxL[:, :-1], correct_BxL[:, :-1]


def ar_nll_per_sequence(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array,
                        mask_id: int | None = None, loss_chunk: int = 0) -> jax.Array:
  """Exact next-token NLL per sequence: mean over the L - 1 predicted positions.

  loss_chunk > 0: the same through nll.chunked_nll, never holding the full logits."""
  if loss_chunk:
    return jnp.mean(_chunked(params, apply_fn, tokens_BxL, mask_id, loss_chunk)[0], axis=-1)
  logits_BxLxV = apply_fn(params, tokens_BxL)
  nll_BxL1 = token_nll(logits_BxLxV[:, :-1], tokens_BxL[:, 1:], mask_id)
  return jnp.mean(nll_BxL1, axis=-1)


def ar_loss(params: Params, apply_fn: ApplyFn, batch: dict, rng: jax.Array, *,
            mask_id: int | None = None, loss_chunk: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token cross-entropy (nats/token). `rng` is unused; kept for one LossFn signature."""
  del rng
  tokens_BxL = batch["tokens"]
  if loss_chunk:
    nll_BxL1, correct = _chunked(params, apply_fn, tokens_BxL, mask_id, loss_chunk)
    return jnp.mean(nll_BxL1), {"accuracy": jnp.mean(correct.astype(jnp.float32))}
  logits_BxLxV = apply_fn(params, tokens_BxL)
  nll_BxL1 = token_nll(logits_BxLxV[:, :-1], tokens_BxL[:, 1:], mask_id)
  correct = top1_correct(logits_BxLxV[:, :-1], tokens_BxL[:, 1:])
  loss = jnp.mean(nll_BxL1)
  return loss, {"accuracy": jnp.mean(correct.astype(jnp.float32))}
