"""The two training objectives and their evaluation, as pure functions of (params, apply_fn, ...).

Units: nats per token. The families live in their own modules: the shared NLL primitive in nll.py,
AR in ar.py, masked diffusion in mdm.py (with the masking schedules in masking.py), AR token orders
in orders.py. This package's own job is the dispatch from a run config to the loss and the
per-sequence evaluation.

Comparing the families: AR's number is a mean over L - 1 conditionals (the first token is free),
the ELBO's is -log p(x) / L over all L tokens, first included; with L in the hundreds the
difference is small but not zero (about (H(x_1) - H_rate) / L).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from dlmscale.errors import UserError
from dlmscale.objectives import orders
from dlmscale.objectives.ar import ar_loss, ar_nll_per_sequence
from dlmscale.objectives.masking import make_schedule
from dlmscale.objectives.mdm import (ESTIMATORS, EVAL_POSITIONS, ElboSettings, corruption, elbo_draws,
                                     elbo_weights, masked_nll, mdm_draws, mdm_elbo_samples, mdm_loss,
                                     stratified_times)
from dlmscale.objectives.nll import ApplyFn, Params, token_nll, top1_correct

__all__ = ["ESTIMATORS", "EVAL_POSITIONS", "ElboSettings", "ar_loss", "ar_nll_per_sequence",
           "corruption", "elbo_draws", "elbo_weights", "loss_chunk", "make_draw_fn", "make_eval_fn", "make_loss_fn",
           "masked_nll", "mdm_draws", "mdm_elbo_samples", "mdm_loss", "stratified_times", "token_nll", "top1_correct"]

DrawFn = Callable[[dict, jax.Array], dict[str, jax.Array]]
LossFn = Callable[[Params, ApplyFn, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Params, ApplyFn, jax.Array, jax.Array], jax.Array]


def loss_chunk(config: ml_collections.ConfigDict) -> int:
  """config.model.loss_chunk: positions per chunk of the memory-lean loss (nll.chunked_nll); 0 = full logits."""
  return int(config.model.get("loss_chunk", 0) or 0)


def make_loss_fn(config: ml_collections.ConfigDict, mask_id: int) -> LossFn:
  """The configured objective as (params, apply_fn, batch, rng) -> (loss, aux)."""
  if config.objective == "ar":
    if orders.num_orders(config) > 1:
      return orders.make_loss_fn(config, mask_id)
    return functools.partial(ar_loss, mask_id=mask_id, loss_chunk=loss_chunk(config))
  if config.objective == "mdm":
    schedule = make_schedule(config.mdm.schedule, config.mdm.poly_exponent)
    return functools.partial(mdm_loss, mask_id=mask_id, schedule=schedule, t_min=float(config.mdm.t_min),
                             loss_chunk=loss_chunk(config))
  raise UserError(f"unknown objective {config.objective!r}; choose ar or mdm")


def make_draw_fn(config: ml_collections.ConfigDict, mask_id: int) -> DrawFn:
  """The loss's randomness for a whole step as (batch, rng) -> per-sequence arrays (leading axis B).

  The loss takes them from the batch when present, so gradient accumulation draws once for the whole
  step and slices: each sequence sees the same t, mask or order whatever the micro-batch size.
  """
  del mask_id
  if config.objective == "mdm":
    schedule = make_schedule(config.mdm.schedule, config.mdm.poly_exponent)
    return functools.partial(mdm_draws, schedule=schedule, t_min=float(config.mdm.t_min))
  if orders.num_orders(config) > 1:
    return orders.make_draw_fn(config)
  return lambda batch, rng: {}


def make_eval_fn(config: ml_collections.ConfigDict, mask_id: int) -> EvalFn:
  """(params, apply_fn, tokens_BxL, seq_ids_B) -> per-sequence nats/token [B].

  AR: the exact NLL (seq_ids unused). MDM: the ELBO averaged over config.eval.mc_samples
  stratified times per sequence, seeded by config.eval.seed and the sequence id, with t clipped at
  config.mdm.t_min as in training (see mdm_elbo_samples), each sample weighted as
  config.eval.mdm_estimator says (see elbo_weights).
  """
  if config.objective == "ar":
    def ar_eval(params, apply_fn, tokens_BxL, seq_ids_B):
      del seq_ids_B
      return ar_nll_per_sequence(params, apply_fn, tokens_BxL, mask_id, loss_chunk(config))
    return ar_eval
  if config.objective == "mdm":
    schedule = make_schedule(config.mdm.schedule, config.mdm.poly_exponent)
    t_min, num_samples, seed = float(config.mdm.t_min), int(config.eval.mc_samples), int(config.eval.seed)
    estimator = config.eval.mdm_estimator
    positions = str(config.eval.get("mdm_positions", "all"))

    def mdm_eval(params, apply_fn, tokens_BxL, seq_ids_B):
      samples_KxB = mdm_elbo_samples(
          params, apply_fn, tokens_BxL, seq_ids_B, mask_id=mask_id, schedule=schedule,
          num_samples=num_samples, eval_seed=seed, t_min=t_min, estimator=estimator,
          positions=positions, loss_chunk=loss_chunk(config))
      return jnp.mean(samples_KxB, axis=0)
    return mdm_eval
  raise UserError(f"unknown objective {config.objective!r}; choose ar or mdm")
