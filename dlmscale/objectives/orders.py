"""Token-order augmentation for AR (`objective=ar`, `config.ar.num_orders=N`; N = 1 is plain AR).

Prabhudesai et al. 2025 trace diffusion's data efficiency to the many token orders its random masks
expose; their ablation trains AR on N fixed random orders and finds that it loses less to repetition
as N grows. This module is that ablation, defined as in their code (wmn-231314/
diffusion-data-constraint, `pretrain_gpt.py:get_batch_pipe` and `megatron/arguments.py`, flags
`--num-order-list N`), with one deliberate difference:

- Same: a fixed set of N orders drawn once from the run seed; order 0 is left to right and the other
  N - 1 are uniform random permutations of positions 1..L-1, with the first token kept first (so a
  sequence still gives L - 1 scored predictions, the same count as plain AR). Each training sequence
  independently takes one of the N orders uniformly. The model reads the permuted sequence causally,
  with RoPE at each token's original position, and predicts the next token of the permuted sequence.
  Evaluation is always left to right (their `evaluate()` turns the order list off), so the numbers are
  the plain AR validation NLL and compare with plain AR and diffusion.
- Different: the model is told which position it predicts next, through a learned embedding of the
  target position added to each slot's input (as in sigma-GPT, Pannatier et al. 2024, and as in their
  own `TargetGPTModel` / `--use-target-position-embeddings` code path, which the order-list runs leave
  off). Without it, the next position is knowable only by recognising which of the N orders a prefix
  follows, which a model can do for small N and cannot do for N -> infinity (the any-order limit the
  paper compares with diffusion); with it, every N poses a well-defined conditional. The embedding
  exists only when N > 1, so N = 1 keeps the plain parameter tree, golden values and checkpoints.
  `config.ar.target_position=False` drops it and reproduces the authors' definition exactly.

Randomness: the order set comes from SeedSequence([config.seed, _ORDERS_SEED_TAG]); which order a
sequence takes is drawn from the train step's own key (fold_in(seed, step)), so a resumed run draws
the same orders, as it draws the same diffusion masks.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dlmscale.errors import UserError
from dlmscale.objectives.nll import next_token_targets, nll_and_correct, token_nll, top1_correct

_ORDERS_SEED_TAG = 5  # SeedSequence([seed, tag]) draws the order set
_CHOICE_FOLD = 7  # fold_in(step key, tag) draws each sequence's order


def num_orders(config: ml_collections.ConfigDict) -> int:
  """config.ar.num_orders (1 when the config predates the option), checked against the objective."""
  ar = config.get("ar") if hasattr(config, "get") else None
  n = ar.get("num_orders", 1) if ar is not None else 1
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise UserError(f"config.ar.num_orders must be an integer >= 1 (1 = plain left-to-right AR), got {n!r}")
  if n > 1 and config.objective != "ar":
    raise UserError(f"config.ar.num_orders={n} applies to objective=ar only (diffusion already sees every "
                    "order); set it to 1 or use --config.objective=ar")
  if n > 1 and config.data.seq_len < 3:
    raise UserError(f"config.ar.num_orders={n} needs data.seq_len >= 3 to have more than one order")
  return int(n)


def tells_target(config: ml_collections.ConfigDict) -> bool:
  """Whether the model gets the target-position embedding: N > 1 and config.ar.target_position."""
  return num_orders(config) > 1 and bool(config.ar.get("target_position", True))


def order_set(seed: int, n: int, length: int) -> np.ndarray:
  """The N orders int32[N, L]: row 0 is 0..L-1; the rest keep 0 first and permute 1..L-1 at random."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), _ORDERS_SEED_TAG]))
  rows = [np.arange(length)] + [np.concatenate([[0], 1 + rng.permutation(length - 1)])
                                for _ in range(n - 1)]
  return np.stack(rows).astype(np.int32)


def permute(tokens_BxL: jax.Array, order_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The sequence read in `order`, and each slot's target position (the next slot's position)."""
  tokens_perm_BxL = jnp.take_along_axis(tokens_BxL, order_BxL, axis=1)
  targets_BxL = jnp.concatenate([order_BxL[:, 1:], jnp.zeros_like(order_BxL[:, :1])], axis=1)
  return tokens_perm_BxL, targets_BxL


def order_draws(batch: dict, rng: jax.Array, *, orders_NxL: jax.Array) -> dict[str, jax.Array]:
  """Which of the N orders each sequence of the step takes (a micro-batch slices these)."""
  return {"order_B": jax.random.randint(jax.random.fold_in(rng, _CHOICE_FOLD), batch["tokens"].shape[:1],
                                        0, orders_NxL.shape[0])}


def ar_orders_loss(params: Any, apply_fn, batch: dict, rng: jax.Array, *, orders_NxL: jax.Array,
                   mask_id: int | None = None, tell_target: bool = True, loss_chunk: int = 0
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean next-token cross-entropy of each sequence read in one of the N orders (nats/token).

  tell_target=False feeds no target positions (the model then has no target embedding): with the
  single left-to-right order this is the plain AR loss, which tests/test_orders.py checks bitwise.
  """
  tokens_BxL = batch["tokens"]
  draws = batch if "order_B" in batch else order_draws(batch, rng, orders_NxL=orders_NxL)
  order_BxL = orders_NxL[draws["order_B"]]
  tokens_perm_BxL, targets_BxL = permute(tokens_BxL, order_BxL)
  kw = {"target_positions_BxL": targets_BxL} if tell_target else {}
  if loss_chunk:
    nll_BxL, correct_BxL = nll_and_correct(params, apply_fn, tokens_perm_BxL, next_token_targets(tokens_perm_BxL),
                                           mask_id, loss_chunk, positions_BxL=order_BxL, **kw)
    return jnp.mean(nll_BxL[:, :-1]), {"accuracy": jnp.mean(correct_BxL[:, :-1].astype(jnp.float32))}
  logits_BxLxV = apply_fn(params, tokens_perm_BxL, positions_BxL=order_BxL, **kw)
  nll_BxL1 = token_nll(logits_BxLxV[:, :-1], tokens_perm_BxL[:, 1:], mask_id)
  correct = top1_correct(logits_BxLxV[:, :-1], tokens_perm_BxL[:, 1:])
  return jnp.mean(nll_BxL1), {"accuracy": jnp.mean(correct.astype(jnp.float32))}


def make_loss_fn(config: ml_collections.ConfigDict, mask_id: int):
  """The augmented AR loss for config.ar.num_orders > 1 (callers keep the plain loss for N = 1)."""
  n = num_orders(config)
  orders_NxL = jnp.asarray(order_set(config.seed, n, config.data.seq_len))
  return functools.partial(ar_orders_loss, orders_NxL=orders_NxL, mask_id=mask_id,
                           tell_target=tells_target(config),
                           loss_chunk=int(config.model.get("loss_chunk", 0) or 0))


def make_draw_fn(config: ml_collections.ConfigDict):
  """The augmented AR loss's per-sequence draws (order_draws) for config.ar.num_orders > 1."""
  orders_NxL = jnp.asarray(order_set(config.seed, num_orders(config), config.data.seq_len))
  return functools.partial(order_draws, orders_NxL=orders_NxL)
