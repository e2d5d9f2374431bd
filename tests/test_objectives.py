"""The objectives: exact values where they are known, seeding, and training toward a known entropy."""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from dlmscale.errors import UserError
from dlmscale.model.transformer import ModelConfig, Transformer
from dlmscale.objectives import (ar_loss, make_eval_fn, make_loss_fn, mdm_elbo_samples, mdm_loss,
                                 stratified_times, token_nll, top1_correct)
from dlmscale.objectives.masking import CosineSchedule, LinearSchedule, PolySchedule, make_schedule


def _uniform_apply(params, tokens_BxL):
  """A 'model' that predicts the uniform distribution, with a huge logit on the (never allowed) mask."""
  V = params["V"]
  logits = jnp.zeros(tokens_BxL.shape + (V,), jnp.float32)
  return logits.at[..., V - 1].set(50.0)


def _tiny_model(V: int, L: int, seed: int = 0):
  """A random bidirectional denoiser; weights from numpy (no PRNG kernel compiles)."""
  cfg = ModelConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=L,
                    causal=False)
  model = Transformer(cfg)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(
      rng.normal(1.0 if len(s.shape) == 1 else 0.0, 0.5, s.shape), s.dtype), shapes)
  return params, jax.jit(model.apply)


def _exact_elbo_linear(params, apply_fn, x_L: np.ndarray, mask_id: int) -> float:
  """sum over mask sets S of 1/(|S| C(L,|S|)) * sum_{i in S} -log p(x_i | x with S masked), / L."""
  L = len(x_L)
  subsets = [s for s in itertools.product([0, 1], repeat=L) if any(s)]
  masks = np.asarray(subsets, bool)
  x_t = np.where(masks, mask_id, x_L[None, :])
  logits = np.asarray(apply_fn(params, jnp.asarray(x_t)), np.float64)
  logits[..., mask_id] = -np.inf
  logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                keepdims=True)) - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, np.broadcast_to(x_L, masks.shape)[..., None], -1)[..., 0]
  m = masks.sum(-1)
  weights = 1.0 / (m * np.array([math.comb(L, k) for k in m]))
  return float(np.sum(weights * np.sum(np.where(masks, nll, 0.0), -1)) / L)


def test_uniform_model_elbo_is_log_v_exactly():
  V, L = 6, 5  # 5 predictable tokens + mask
  params = {"V": V}
  x_L = np.array([0, 3, 1, 4, 2])
  assert _exact_elbo_linear(params, _uniform_apply, x_L, V - 1) == pytest.approx(math.log(V - 1),
                                                                                  rel=1e-6)
  # AR scores every allowed token at 1/(V-1) too.
  loss, _ = ar_loss(params, _uniform_apply, {"tokens": jnp.asarray(x_L[None])}, None)
  assert float(loss) == pytest.approx(math.log(V - 1), rel=1e-6)


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule(), PolySchedule(3.0)])
def test_uniform_model_estimators_are_unbiased_for_every_schedule(schedule):
  """E_t[w(t) (1 - alpha(t))] = alpha(0) - alpha(1) = 1, so both estimators average to log(V - 1)."""
  V, L, R = 6, 16, 2048
  params = {"V": V}
  tokens = jnp.zeros((R, L), jnp.int32)
  est_KxR = mdm_elbo_samples(params, _uniform_apply, tokens, jnp.arange(R), mask_id=V - 1,
                             schedule=schedule, num_samples=4, eval_seed=0, t_min=1e-3)
  per_seq = np.asarray(jnp.mean(est_KxR, 0))
  se = per_seq.std() / math.sqrt(R)
  assert abs(per_seq.mean() - math.log(V - 1)) < 4 * se
  train_loss = jax.jit(lambda key: mdm_loss(params, _uniform_apply, {"tokens": tokens[:256]}, key,
                                            mask_id=V - 1, schedule=schedule, t_min=1e-4)[0])
  train = [float(train_loss(jax.random.PRNGKey(i))) for i in range(16)]
  assert abs(np.mean(train) - math.log(V - 1)) < 4 * np.std(train, ddof=1) / math.sqrt(16) + 1e-3


def test_k_sample_elbo_converges_to_exact_enumeration():
  V, L = 6, 5
  mask_id = V - 1
  params, apply_fn = _tiny_model(V, L)
  x_L = np.array([2, 0, 4, 4, 1])
  exact = _exact_elbo_linear(params, apply_fn, x_L, mask_id)
  # R independent repeats of the K-sample estimator (one per sequence id, i.e. per eval seed).
  # t_min = 0.01 keeps the spread measurable: at t -> 0 the 1/t weight makes the 4th moment blow
  # up like 1/t_min, so sample standard deviations get noisy; the bias it adds is O(t_min^2).
  R, t_min = 1024, 0.01
  est_fn = jax.jit(mdm_elbo_samples, static_argnames=("apply_fn", "mask_id", "schedule",
                                                      "num_samples", "eval_seed", "t_min"))
  stats = {}
  for K in (4, 16, 64):
    samples_KxR = est_fn(params, apply_fn, jnp.broadcast_to(jnp.asarray(x_L), (R, L)),
                         jnp.arange(R), mask_id=mask_id, schedule=LinearSchedule(),
                         num_samples=K, eval_seed=7, t_min=t_min)
    est_R = np.asarray(jnp.mean(samples_KxR, axis=0), np.float64)
    stats[K] = (est_R.mean(), est_R.std(ddof=1))
    assert abs(est_R.mean() - exact) < 4 * est_R.std(ddof=1) / math.sqrt(R), (K, stats, exact)
  # The spread of one estimate shrinks like 1/sqrt(K): 16x the samples, a quarter of the spread.
  ratio = stats[4][1] / stats[64][1]
  assert 2.8 < ratio < 5.5, (stats, ratio)
  assert stats[4][1] > stats[16][1] > stats[64][1]
  assert abs(stats[64][0] - exact) < 0.01 * exact


def _mdm_config(**eval_kw):
  c = base.get_config()
  c.objective = "mdm"
  c.data.vocab_size = 6
  for k, v in eval_kw.items():
    c.eval[k] = v
  return c


def test_eval_is_independent_of_batch_layout():
  V, L = 6, 8
  params, apply_fn = _tiny_model(V, L, seed=1)
  inner = make_eval_fn(_mdm_config(mc_samples=3, seed=11), mask_id=V - 1)
  eval_fn = jax.jit(inner, static_argnums=1)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (6, L), 0, V - 1)
  ids = jnp.arange(100, 106)
  whole = np.asarray(eval_fn(params, apply_fn, tokens, ids))
  pairs = np.concatenate([eval_fn(params, apply_fn, tokens[i:i + 2], ids[i:i + 2])
                          for i in (0, 2, 4)])
  reversed_ = np.asarray(eval_fn(params, apply_fn, tokens[::-1], ids[::-1]))[::-1]
  np.testing.assert_allclose(pairs, whole, rtol=1e-5)
  np.testing.assert_allclose(reversed_, whole, rtol=1e-5)
  # The sequence id (not its slot in the batch) picks the noise: other ids give other numbers.
  other = np.asarray(eval_fn(params, apply_fn, tokens, ids + 1000))
  assert np.all(np.abs(other - whole) > 0) and np.all(np.isfinite(whole))


def test_ar_loss_matches_hand_computed_next_token_nll():
  V, B, L = 7, 3, 6
  logits = jax.random.normal(jax.random.PRNGKey(0), (B, L, V))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (B, L), 0, V - 1)
  apply_fn = lambda p, x: logits  # noqa: E731
  loss, aux = ar_loss(None, apply_fn, {"tokens": tokens}, None)
  lg = np.asarray(logits, np.float64)[:, :-1, :V - 1]  # the mask id is outside the support
  logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
  want = -np.take_along_axis(logp, np.asarray(tokens)[:, 1:, None], -1).mean()
  assert loss.dtype == jnp.float32 and float(loss) == pytest.approx(want, rel=1e-5)
  assert 0.0 <= float(aux["accuracy"]) <= 1.0
  ar_eval = make_eval_fn(base.get_config(), mask_id=V - 1)
  assert float(jnp.mean(ar_eval(None, apply_fn, tokens, jnp.arange(B)))) == pytest.approx(want,
                                                                                         rel=1e-5)


def _reference_nll(logits_BxLxV, targets_BxL, mask_id):
  """The textbook form: mask logit to -inf, log_softmax, gather (what autodiff differentiates)."""
  V = logits_BxLxV.shape[-1]
  x = jnp.where(jnp.arange(V) == mask_id, -jnp.inf, logits_BxLxV.astype(jnp.float32))
  return -jnp.take_along_axis(jax.nn.log_softmax(x, -1), targets_BxL[..., None], -1)[..., 0]


@pytest.mark.parametrize("dtype,mask_id", [(jnp.float32, 10), (jnp.float32, 3), (jnp.bfloat16, 10)])
def test_token_nll_and_its_handwritten_gradient_match_autodiff(dtype, mask_id):
  V, B, L = 11, 3, 5
  logits = (4 * jax.random.normal(jax.random.PRNGKey(0), (B, L, V))).astype(dtype)
  targets = jax.random.randint(jax.random.PRNGKey(1), (B, L), 0, V - 1)
  targets = jnp.where(targets == mask_id, V - 1, targets)  # never the mask id itself
  weights = jax.random.uniform(jax.random.PRNGKey(2), (B, L))  # a non-uniform cotangent
  got = token_nll(logits, targets, mask_id)
  want = _reference_nll(logits, targets, mask_id)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  g_got = jax.grad(lambda x: jnp.sum(weights * token_nll(x, targets, mask_id)))(logits)
  g_want = jax.grad(lambda x: jnp.sum(weights * _reference_nll(x, targets, mask_id)))(logits)
  assert g_got.dtype == dtype
  np.testing.assert_allclose(np.asarray(g_got, np.float32), np.asarray(g_want, np.float32),
                             rtol=1e-5, atol=1e-6 if dtype == jnp.float32 else 1e-2)
  assert float(jnp.max(jnp.abs(g_got[..., mask_id]))) == 0.0  # the mask id gets no gradient
  # Per position the gradient sums to zero over the support (softmax minus one-hot).
  np.testing.assert_allclose(np.asarray(jnp.sum(g_got.astype(jnp.float32), -1)), 0.0, atol=1e-2)


def test_top1_correct_is_argmax_equals_target():
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 50, 9))
  targets = jax.random.randint(jax.random.PRNGKey(1), (4, 50), 0, 9)
  want = jnp.argmax(logits, -1) == targets
  assert 0 < int(jnp.sum(want)) < want.size  # both outcomes occur
  np.testing.assert_array_equal(top1_correct(logits, targets), want)


@pytest.mark.parametrize("t_min", [0.05, 0.3])
def test_mdm_loss_masks_at_rate_t_and_only_scores_masked_positions(t_min):
  """Closed forms: row b of a stratified batch masks a fraction t_b in [b/B, (b+1)/B) (sorted;
  t_min below that), never touches an unmasked token, and a uniform model's weighted loss
  sum_b (1/t_b) |masked_b| ln(V-1) / (B L) has expectation ln(V-1), whatever t_min."""
  V, B, L = 5, 32, 4096
  seen = []
  def spy_apply(params, x):
    seen.append(x)
    return jnp.zeros(x.shape + (V,))
  tokens = jax.random.randint(jax.random.PRNGKey(0), (B, L), 0, V - 1)
  loss, aux = mdm_loss(None, spy_apply, {"tokens": tokens}, jax.random.PRNGKey(3), mask_id=V - 1,
                       schedule=LinearSchedule(), t_min=t_min)
  x_t = np.asarray(seen[0])
  masked = x_t == V - 1
  np.testing.assert_array_equal(np.where(masked, np.asarray(tokens), x_t), np.asarray(tokens))
  rate_B = np.sort(masked.mean(axis=1))
  lo_B = np.maximum(np.arange(B) / B, t_min)
  hi_B = np.maximum(np.arange(1, B + 1) / B, t_min)
  tol_B = 4 * np.sqrt(hi_B * (1 - lo_B) / L)  # 4 binomial standard errors
  assert np.all(rate_B > lo_B - tol_B) and np.all(rate_B < hi_B + tol_B), rate_B
  assert float(aux["mask_rate"]) == pytest.approx(masked.mean(), rel=1e-6)
  assert float(aux["masked_nll"]) == pytest.approx(math.log(V - 1), rel=1e-5)
  # E[|masked_b| / (t_b L)] = 1 per row; the sample's relative spread is about 1 / sqrt(B L t).
  assert float(loss) == pytest.approx(math.log(V - 1), rel=0.03)
  assert float(loss) / math.log(V - 1) > float(aux["mask_rate"]) + 0.3  # weighted, not a plain mean


def test_stratified_times_cover_the_unit_interval_evenly():
  t = np.sort(np.asarray(stratified_times(jnp.float32(0.37), 8)))
  np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-6)
  assert 0 <= t[0] < 1 / 8 and t[-1] < 1


def test_schedules_derivative_and_weight_are_consistent():
  t = jnp.linspace(0.05, 0.95, 19)
  for s in (LinearSchedule(), CosineSchedule(), PolySchedule(2.5)):
    np.testing.assert_allclose(s.dalpha(t), jax.vmap(jax.grad(s.alpha))(t), rtol=1e-4)
    np.testing.assert_allclose(s.mask_prob(t), 1 - s.alpha(t), atol=1e-6)
    np.testing.assert_allclose(s.weight(t), -s.dalpha(t) / (1 - s.alpha(t)), rtol=1e-4)
    assert float(s.alpha(jnp.float32(0))) == 1.0 and abs(float(s.alpha(jnp.float32(1)))) < 1e-6


def test_make_loss_fn_picks_the_objective_and_rejects_bad_config():
  c = _mdm_config()
  c.mdm.schedule = "cosine"
  assert make_loss_fn(c, 5).keywords["schedule"] == CosineSchedule()
  c.objective = "ar"
  assert make_loss_fn(c, 5).func is ar_loss
  c.objective = "mlm"
  with pytest.raises(UserError, match="objective"):
    make_loss_fn(c, 5)
  with pytest.raises(UserError, match="schedule"):
    make_schedule("sqrt")
  with pytest.raises(UserError, match="poly_exponent"):
    make_schedule("poly", 0.0)


# ---- Training toward a known entropy rate ------------------------------------------------------

N_STATES, SEQ = 7, 16  # vocabulary 8 = 7 Markov states + <mask>


def _markov_chain() -> tuple[np.ndarray, float, float]:
  """A circulant chain (uniform stationary law): entropy rate H and per-token sequence entropy."""
  P = np.full((N_STATES, N_STATES), 0.02)
  for i in range(N_STATES):
    P[i, (i + 1) % N_STATES], P[i, (i + 3) % N_STATES] = 0.7, 0.2
  rate = float(-np.sum(P[0] * np.log(P[0])))  # every row is a permutation of row 0
  per_token = (math.log(N_STATES) + (SEQ - 1) * rate) / SEQ  # -E log p(x) / L, x_1 ~ stationary
  return P, rate, per_token


def _sample(P: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  x = np.empty((n, SEQ), np.int32)
  x[:, 0] = rng.integers(0, N_STATES, n)
  cum = np.cumsum(P, axis=1)
  for j in range(1, SEQ):
    x[:, j] = (rng.random(n)[:, None] > cum[x[:, j - 1]]).sum(1)
  return x


def test_both_families_train_toward_the_entropy_rate_and_never_below():
  P, rate, per_token = _markov_chain()
  rng = np.random.default_rng(0)
  val = jnp.asarray(_sample(P, 512, rng))
  shared = ModelConfig(vocab_size=N_STATES + 1, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                       max_len=SEQ)
  init = jax.jit(Transformer(shared).init)(jax.random.PRNGKey(0), val[:1])  # one tree, both
  floors = {"ar": rate, "mdm": per_token}  # AR scores L-1 conditionals; the ELBO bounds -log p(x)/L
  for objective, causal in (("ar", True), ("mdm", False)):
    c = base.get_config()
    c.objective, c.data.vocab_size = objective, N_STATES + 1
    c.eval.mc_samples = 8
    steps = {"ar": 300, "mdm": 600}[objective]  # diffusion learns this source more slowly
    model = Transformer(dataclasses.replace(shared, causal=causal))
    loss_fn = make_loss_fn(c, mask_id=N_STATES)
    eval_fn = jax.jit(lambda p: make_eval_fn(c, mask_id=N_STATES)(  # noqa: B023
        p, model.apply, val, jnp.arange(val.shape[0])))
    tx = optax.adam(3e-3)  # noqa: B023

    @jax.jit
    def step(params, opt_state, tokens, key):
      grads = jax.grad(lambda p: loss_fn(p, model.apply, {"tokens": tokens}, key)[0])(params)  # noqa: B023
      updates, opt_state = tx.update(grads, opt_state)  # noqa: B023
      return optax.apply_updates(params, updates), opt_state

    params, opt_state = init, tx.init(init)
    curve = []
    for i in range(steps + 1):
      if i % 150 == 0:
        nll = np.asarray(eval_fn(params), np.float64)
        curve.append((nll.mean(), nll.std(ddof=1) / math.sqrt(len(nll))))
      if i < steps:
        params, opt_state = step(params, opt_state, jnp.asarray(_sample(P, 32, rng)),
                                 jax.random.PRNGKey(i))
    floor = floors[objective]
    for mean, se in curve:  # never below the source's entropy beyond noise
      assert mean > floor - 3 * se, (objective, curve, floor)
    start, end = curve[0][0], curve[-1][0]
    assert start > floor + 0.7  # an untrained model is far off (about log 7 = 1.95 nats)
    assert end - floor < 0.25 * (start - floor), (objective, curve, floor)


def test_count_estimator_matches_exact_elbo_with_less_spread_than_time():
  """(L+1)/|S| is E[1/t | S] under the linear schedule: the same mean as 1/t, a smaller spread."""
  V, L = 6, 5
  params, apply_fn = _tiny_model(V, L)
  x_L = np.array([2, 0, 4, 4, 1])
  exact = _exact_elbo_linear(params, apply_fn, x_L, V - 1)
  R, K = 1024, 4
  tokens = jnp.broadcast_to(jnp.asarray(x_L), (R, L))
  spread = {}
  for estimator in ("time", "count"):
    samples_KxR = mdm_elbo_samples(params, apply_fn, tokens, jnp.arange(R), mask_id=V - 1,
                                   schedule=LinearSchedule(), num_samples=K, eval_seed=3,
                                   t_min=1e-3, estimator=estimator)
    est_R = np.asarray(jnp.mean(samples_KxR, axis=0), np.float64)
    assert abs(est_R.mean() - exact) < 4 * est_R.std(ddof=1) / math.sqrt(R), (estimator, exact)
    spread[estimator] = est_R.std(ddof=1)
  assert spread["count"] < 0.8 * spread["time"], spread
