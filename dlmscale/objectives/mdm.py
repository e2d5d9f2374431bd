"""Masked diffusion (absorbing state, continuous time): the training loss and the ELBO.

x_t masks each token independently with probability 1 - alpha(t); the loss is w(t) * sum over
masked positions of -log p(x0_i | x_t), divided by L, with w(t) = -alpha'(t) / (1 - alpha(t)) (1/t
for the linear schedule). Its expectation over t ~ U(0, 1) is an upper bound (ELBO) on
-log p(x0) / L, which is what eval reports. Training draws one t per sequence, stratified over the
batch; eval draws K stratified t per sequence from a seed fixed by the sequence id alone, so the
number does not depend on the batch size, the device count or the step. Both clip t at
config.mdm.t_min (see mdm_elbo_samples for why that costs only O(t_min^2) in bias).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from dlmscale.errors import UserError
from dlmscale.objectives.masking import LinearSchedule, Schedule, make_schedule
from dlmscale.objectives.nll import ApplyFn, Params, nll_and_correct, token_nll

ESTIMATORS = ("time", "count")  # diffusion ELBO sample weights: w(t), or E[w(t) | mask set]


@dataclasses.dataclass(frozen=True)
class ElboSettings:
  """How a diffusion ELBO is estimated: built once from the run config, passed as one object.

  `t_min` clips the time samples of the "time" estimator as training does; the "count" estimator
  draws t ~ U(0, 1), which its weights assume, so its `t_min` is 0 (see `clipped`).
  """
  schedule: Schedule
  num_samples: int
  seed: int
  estimator: str = "time"
  t_min: float = 0.0

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, estimator: str | None = None,
         num_samples: int | None = None) -> "ElboSettings":
    return cls(schedule=make_schedule(config.mdm.schedule, config.mdm.poly_exponent),
               num_samples=int(num_samples or config.eval.mc_samples), seed=int(config.eval.seed),
               estimator=str(estimator or config.eval.mdm_estimator), t_min=float(config.mdm.t_min))

  @property
  def clipped(self) -> float:
    """The t_min the draws use: the configured clip for "time", none for "count"."""
    return 0.0 if self.estimator == "count" else self.t_min


def stratified_times(u: jax.Array, n: int) -> jax.Array:
  """t_i = (u + i/n) mod 1: one uniform draw, n evenly spaced times (lower variance than iid)."""
  return jnp.mod(u + jnp.arange(n, dtype=jnp.float32) / n, 1.0)


EVAL_POSITIONS = ("all", "shifted")  # eval.mdm_positions: every position, or AR's L - 1


def elbo_weights(estimator: str, schedule: Schedule, t_KxB, n_masked_KxB, length_B) -> jax.Array:
  """Sample weights of the ELBO estimate; a sample with nothing masked counts 0 either way.

  "time": w(t), the continuous-time ELBO as trained (1/t for the linear schedule); its variance is
  dominated by rare draws with a small t that still mask a token (1/t is unbounded). "count" (linear
  schedule only): E[1/t | the mask set S] = (m + 1) / |S| for m maskable positions, i.e. the same
  draws Rao-Blackwellised over t: the same expectation, weights at most m + 1. (S ~ Bernoulli(t),
  t ~ U(0, 1) gives P(S) = 1 / ((m + 1) C(m, |S|)), so the mean is the exact
  sum_S 1 / (|S| C(m, |S|)) sum_{i in S} nll_i.)
  """
  if estimator == "time":
    return schedule.weight(jnp.where(n_masked_KxB > 0, t_KxB, 1.0))  # no 0 * inf at t = 0
  if estimator == "count":
    if not isinstance(schedule, LinearSchedule):
      raise UserError("the count estimator assumes the linear schedule (mask rate t); use 'time'")
    return (length_B.astype(jnp.float32) + 1.0) / jnp.maximum(n_masked_KxB, 1.0)
  raise UserError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def masked_nll(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array, mask_BxL: jax.Array,
               mask_id: int, loss_chunk: int = 0) -> tuple[jax.Array, jax.Array]:
  """The denoiser on x_t (mask_BxL replaced by <mask>): per sequence the number of masked positions
  and the sum of -log p(x0_i | x_t) over them (loss_chunk > 0: through nll.chunked_nll)."""
  x_t_BxL = jnp.where(mask_BxL, mask_id, tokens_BxL)
  if loss_chunk:
    nll_BxL = nll_and_correct(params, apply_fn, x_t_BxL, tokens_BxL, mask_id, loss_chunk)[0]
  else:
    nll_BxL = token_nll(apply_fn(params, x_t_BxL), tokens_BxL, mask_id)
  masked_sum_B = jnp.sum(jnp.where(mask_BxL, nll_BxL, 0.0), axis=-1)
  return jnp.sum(mask_BxL, axis=-1).astype(jnp.float32), masked_sum_B


def _mdm_terms(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array, t_B: jax.Array,
               mask_BxL: jax.Array, mask_id: int, schedule: Schedule, loss_chunk: int = 0
               ) -> tuple[jax.Array, jax.Array]:
  """Per-sequence weighted masked NLL / L (every position maskable), and the unweighted masked NLL sum."""
  L = tokens_BxL.shape[-1]
  n_masked_B, masked_sum_B = masked_nll(params, apply_fn, tokens_BxL, mask_BxL, mask_id, loss_chunk)
  weight_B = elbo_weights("time", schedule, t_B, n_masked_B, jnp.full(t_B.shape, L))
  return weight_B * masked_sum_B / L, masked_sum_B


def mdm_draws(batch: dict, rng: jax.Array, *, schedule: Schedule, t_min: float) -> dict[str, jax.Array]:
  """The step's randomness per sequence: t stratified over the whole batch, and the mask it draws."""
  B, L = batch["tokens"].shape
  rng_t, rng_mask = jax.random.split(rng)
  t_B = jnp.maximum(stratified_times(jax.random.uniform(rng_t), B), t_min)
  mask_BxL = jax.random.uniform(rng_mask, (B, L)) < schedule.mask_prob(t_B)[:, None]
  return {"t_B": t_B, "mask_BxL": mask_BxL}


def mdm_loss(params: Params, apply_fn: ApplyFn, batch: dict, rng: jax.Array, *,
             mask_id: int, schedule: Schedule, t_min: float, loss_chunk: int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Masked-diffusion ELBO estimate (nats/token): one stratified t per sequence, clipped at t_min.

  A batch that already carries `t_B` and `mask_BxL` (a micro-batch sliced from the whole step's
  draws, see mdm_draws) uses them instead of drawing its own.
  """
  tokens_BxL = batch["tokens"]
  draws = batch if "t_B" in batch else mdm_draws(batch, rng, schedule=schedule, t_min=t_min)
  t_B, mask_BxL = draws["t_B"], draws["mask_BxL"]
  loss_B, masked_sum_B = _mdm_terms(params, apply_fn, tokens_BxL, t_B, mask_BxL, mask_id, schedule,
                                     loss_chunk)
  n_masked = jnp.sum(mask_BxL)
  aux = {
      "mask_rate": jnp.mean(mask_BxL.astype(jnp.float32)),
      "masked_nll": jnp.sum(masked_sum_B) / jnp.maximum(n_masked, 1).astype(jnp.float32),
  }
  return jnp.mean(loss_B), aux


def corruption(key: jax.Array, k: jax.Array, num_samples: int, maskable_L: jax.Array,
               schedule: Schedule, t_min: float) -> tuple[jax.Array, jax.Array]:
  """Draw k of K for one sequence: t_k = max((u + k/K) mod 1, t_min), and which maskable positions it
  masks. Depends only on (key, k), never on the batch layout."""
  key_u, key_mask = jax.random.split(key)
  t = jnp.mod(jax.random.uniform(key_u) + k.astype(jnp.float32) / num_samples, 1.0)
  t = jnp.maximum(t, t_min)
  draw_L = jax.random.uniform(jax.random.fold_in(key_mask, k), maskable_L.shape) < schedule.mask_prob(t)
  return t, draw_L & maskable_L


def elbo_draws(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array, ids_B: jax.Array,
               maskable_BxL: jax.Array, *, mask_id: int, schedule: Schedule, num_samples: int,
               seed: int, t_min: float, loss_chunk: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """K stratified draws per row: t, the number masked and their summed NLL, each [K, B].

  Row b draws from fold_in(PRNGKey(seed), ids_B[b]) and masks only its maskable positions: the
  unconditional ELBO (every position, or AR's L - 1) and the conditional one of choice scoring
  (mc_scoring: the choice's positions) are this one estimator. Draws run one after another
  (lax.map): memory stays at one B x L x V logits tensor.
  """
  base = jax.random.PRNGKey(seed)
  keys_B = jax.vmap(lambda i: jax.random.fold_in(base, i))(ids_B.astype(jnp.uint32))

  def one_draw(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    t_B, mask_BxL = jax.vmap(
        lambda key, maskable_L: corruption(key, k, num_samples, maskable_L, schedule, t_min))(
            keys_B, maskable_BxL)
    n_masked_B, masked_sum_B = masked_nll(params, apply_fn, tokens_BxL, mask_BxL, mask_id, loss_chunk)
    return t_B, n_masked_B, masked_sum_B

  return jax.lax.map(one_draw, jnp.arange(num_samples))


def mdm_elbo_samples(params: Params, apply_fn: ApplyFn, tokens_BxL: jax.Array,
                     seq_ids_B: jax.Array, *, mask_id: int, schedule: Schedule,
                     num_samples: int, eval_seed: int, t_min: float, estimator: str = "time",
                     positions: str = "all", loss_chunk: int = 0) -> jax.Array:
  """K per-sequence ELBO terms [K, B] (nats/token); their mean over K is the estimate.

  positions="shifted" scores the same L - 1 positions as AR: position 0 is never masked (it is
  the condition, as AR's first token is) and the bound is per token of positions 1..L-1, i.e. an
  ELBO on -log p(x_1..x_{L-1} | x_0) / (L - 1). "all" masks every position and divides by L.

  Sequence s uses rng = fold_in(PRNGKey(eval_seed), s) and t_k = max((u_s + k/K) mod 1, t_min).
  The clip matters: with the 1/t weight a lone masked token at t -> 0 gives the estimator infinite
  variance (log-divergent), while the integrand is smooth at 0, so clipping biases the bound by only
  O(t_min^2). The count estimator draws t unclipped: its weight (L+1)/|S| is exact only for
  t ~ U(0, 1) and bounded anyway.
  """
  B, L = tokens_BxL.shape
  if positions not in EVAL_POSITIONS:
    raise ValueError(f"positions={positions!r}: choose one of {', '.join(EVAL_POSITIONS)}")
  n_positions = L - 1 if positions == "shifted" else L
  maskable_BxL = jnp.broadcast_to(jnp.arange(L) >= L - n_positions, (B, L))
  t_KxB, n_KxB, sum_KxB = elbo_draws(
      params, apply_fn, tokens_BxL, seq_ids_B, maskable_BxL, mask_id=mask_id, schedule=schedule,
      num_samples=num_samples, seed=eval_seed, t_min=0.0 if estimator == "count" else t_min,
      loss_chunk=loss_chunk)
  weight_KxB = elbo_weights(estimator, schedule, t_KxB, n_KxB, jnp.full((B,), n_positions))
  return weight_KxB * sum_KxB / n_positions
