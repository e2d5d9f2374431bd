"""Comparable numbers: the count estimator draws t unclipped; FLOPs in the published convention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from analysis.findings import critical
from dlmscale.model.transformer import ModelConfig, Transformer
from dlmscale.objectives import mdm_elbo_samples
from dlmscale.objectives.masking import LinearSchedule


def _model(V: int = 6, L: int = 5):
  cfg = ModelConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=L, causal=False)
  model = Transformer(cfg)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)
  return params, jax.jit(model.apply)


def test_count_estimator_ignores_t_min_and_time_estimator_does_not():
  params, apply_fn = _model()
  tokens = jnp.broadcast_to(jnp.asarray([2, 0, 4, 4, 1]), (64, 5))
  kw = dict(mask_id=5, schedule=LinearSchedule(), num_samples=4, eval_seed=3)
  run = lambda est, t_min: np.asarray(mdm_elbo_samples(params, apply_fn, tokens, jnp.arange(64),
                                                       t_min=t_min, estimator=est, **kw))
  np.testing.assert_array_equal(run("count", 0.0), run("count", 0.3))  # (L+1)/|S| assumes t ~ U(0,1)
  assert not np.array_equal(run("time", 0.0), run("time", 0.3))


def test_c_crit_law_is_fitted_on_6nd_flops():
  """Two budgets; MDM's counted FLOPs are 2x AR's per token, 6ND is equal: crossings differ."""
  rows = []
  for u in (1e6, 4e6):
    for obj in ("ar", "mdm"):
      for e, (l_ar, l_mdm) in zip((1, 4, 16, 64), ((5.0, 5.4), (4.5, 4.6), (4.4, 4.2), (4.6, 4.0))):
        n, d = 1e6, u * e
        rows.append(dict(objective=obj, unique_tokens=u, model_size="s1", epochs=float(e), N=n, D=d,
                         C=(6 if obj == "ar" else 7) * n * d, C_6ND=6 * n * d,
                         loss=l_ar if obj == "ar" else l_mdm, se=0.01))
  cross = critical.findings(pd.DataFrame(rows), n_boot=0)
  assert cross["c_crit_fit"]["flops"].startswith("6ND")
  six = cross["c_crit_6nd"]
  counted = {str(b["unique_tokens"]): b["c_crit"] for b in cross["per_budget"]}
  assert set(six) == set(counted) and all(six[k] != counted[k] for k in six)


def _exact_shifted_elbo(params, apply_fn, x_L: np.ndarray, mask_id: int) -> float:
  """sum over mask sets S of positions 1..L-1 of 1/(|S| C(m,|S|)) sum_{i in S} nll_i, / m (m = L-1)."""
  import itertools
  import math
  from dlmscale.objectives import token_nll
  L, m = len(x_L), len(x_L) - 1
  total = 0.0
  for s in itertools.product([0, 1], repeat=m):
    if not any(s):
      continue
    mask = np.array((0,) + s, bool)
    x_t = np.where(mask, mask_id, x_L)[None]
    nll = np.asarray(token_nll(apply_fn(params, jnp.asarray(x_t)), jnp.asarray(x_L)[None], mask_id))[0]
    k = int(mask.sum())
    total += nll[mask].sum() / (k * math.comb(m, k))
  return total / m


def test_shifted_positions_never_mask_position_0_and_match_the_exact_conditional_elbo():
  params, apply_fn = _model()
  x_L = np.array([2, 0, 4, 4, 1])
  exact = _exact_shifted_elbo(params, apply_fn, x_L, 5)
  R = 1024
  tokens = jnp.broadcast_to(jnp.asarray(x_L), (R, 5))
  est_R = np.asarray(jnp.mean(mdm_elbo_samples(
      params, apply_fn, tokens, jnp.arange(R), mask_id=5, schedule=LinearSchedule(), num_samples=4,
      eval_seed=3, t_min=0.0, estimator="count", positions="shifted"), axis=0), np.float64)
  assert abs(est_R.mean() - exact) < 4 * est_R.std(ddof=1) / np.sqrt(R)
