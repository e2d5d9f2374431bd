"""The autoregressive objective: exact next-token NLL.

The model runs on all L positions (the same shapes and FLOPs as the diffusion denoiser) and the
logits at positions 0..L-2 predict tokens 1..L-1, so a sequence gives L - 1 predictions; the first
token is never scored. The loss and the per-sequence eval are means over those L - 1 predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlmscale.objectives.nll import ApplyFn, Params, token_nll, top1_correct


def ar_nll_per_sequence(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array,
                        mask_id: int | None = None) -> jax.Array:
  """Exact next-token NLL per sequence: mean over the L - 1 predicted positions."""
  logits_BxLxV = apply_fn(params, tokens_BxL)
  nll_BxL1 = token_nll(logits_BxLxV[:, :-1], tokens_BxL[:, 1:], mask_id)
  return jnp.mean(nll_BxL1, axis=-1)


def ar_loss(params: Params, apply_fn: ApplyFn, batch: dict, rng: jax.Array, *,
            mask_id: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token cross-entropy (nats/token). `rng` is unused; kept for one LossFn signature."""
  del rng
  tokens_BxL = batch["tokens"]
  logits_BxLxV = apply_fn(params, tokens_BxL)
  nll_BxL1 = token_nll(logits_BxLxV[:, :-1], tokens_BxL[:, 1:], mask_id)
  correct = top1_correct(logits_BxLxV[:, :-1], tokens_BxL[:, 1:])
  loss = jnp.mean(nll_BxL1)
  return loss, {"accuracy": jnp.mean(correct.astype(jnp.float32))}
