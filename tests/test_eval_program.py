"""Evaluation as one compiled program: the validation set lives on the devices and one lax.map
program (steps.Setup.eval_all) scores all its batches; the task is one program per length bucket.

Each must give the numbers of the per-batch path it replaces, and compile once for every evaluation
of every run of a shape.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from conftest import tiny_config
from dlmscale import run_dir as rundir
from dlmscale.data import pipeline
from dlmscale.eval import choices as mc_scoring
from dlmscale.eval import val_loss
from dlmscale.objectives.masking import LinearSchedule
from dlmscale.objectives.mdm import ElboSettings
from dlmscale.runtime import sharding
from dlmscale.train import loop, steps as program
from helpers.tiny_model import apply_and_params

V, MASK = 8, 7  # a toy vocabulary: ids 0..6 are tokens, 7 is <mask>


def _per_batch(eval_step, params, val_NxL: np.ndarray, batch_size: int, put) -> np.ndarray:
  """The path eval_all replaces: one eval_step call per batch, the last padded with the last row."""
  n, out_N = len(val_NxL), np.empty(len(val_NxL))
  for lo in range(0, n, batch_size):
    ids_B = np.arange(lo, lo + batch_size)
    nll_B = eval_step(params, put(val_NxL[np.minimum(ids_B, n - 1)]), put(ids_B.astype(np.int32)))
    out_N[lo:lo + batch_size] = np.asarray(nll_B)[ids_B < n]
  return out_N


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_eval_all_equals_the_per_batch_step(tiny_corpus, data_cache, objective):
  """11 sequences in batches of 4: two whole batches and a padded one (3 real rows)."""
  cfg = tiny_config(tiny_corpus, data_cache, objective)
  prepared = pipeline.prepare(cfg.data)
  setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, 12, sharding.make_mesh(cfg.mesh))
  val_NxL = pipeline.eval_set(prepared, 11).tokens_NxL
  assert len(val_NxL) == 11
  with jax.set_mesh(setup.mesh):
    params = setup.init().params
    batches = val_loss.place(val_NxL, 4, setup.put_batches)
    got = val_loss.per_sequence_losses(setup.eval_all, params, batches)
    put = functools.partial(sharding.host_batch_to_global, sharding=setup.batch_sharding)  # one process
    want = _per_batch(setup.eval_step, params, val_NxL, 4, put)
  assert batches.tokens_NbxBxL.shape == (3, 4, val_NxL.shape[1]) and batches.n == 11
  assert got.dtype == np.float64 and got.shape == (11,)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_every_evaluation_of_two_runs_of_a_shape_compiles_once(tiny_corpus, data_cache, tmp_path):
  """Two diffusion runs (another seed and lr), each evaluated three times with the task scored at
  every evaluation: one trace of eval_all and one scorer for all six, and a startup time each."""
  program._PROGRAMS.clear()
  mc_scoring.make_scorer.cache_clear()
  runs = [tiny_config(tiny_corpus, data_cache, "mdm", seed=s, **{"optim.lr": lr, "eval.task_every": 1})
          for s, lr in ((0, 1e-2), (1, 3e-3))]
  for c in runs:
    loop.train_and_evaluate(c, tmp_path / c.run_name / str(c.seed))
  (progs,) = program._PROGRAMS.values()  # one shape, one set of programs
  assert progs.eval_all._cache_size() == 1 and progs.eval_step._cache_size() == 0
  info = mc_scoring.make_scorer.cache_info()
  assert info.misses == 1 and info.currsize == 1  # the second run and every later call hit
  for c in runs:
    workdir = tmp_path / c.run_name / str(c.seed)
    rows = rundir.read_metrics(workdir)
    assert [r["step"] for r in rows if r["split"] == "eval"] == [4, 8, 12]
    assert [r["step"] for r in rows if r["split"] == "mc"] == [4, 8, 12]
    s = rundir.read_summary(workdir)
    assert 0 <= s["startup_compile_s"] <= s["startup_s"] < s["phases"]["total"]


def _items(n: int, seed: int = 0) -> list[mc_scoring.McItem]:
  """Items of varied context and choice lengths: rows fall into two length buckets (16 and 32)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    ctx = tuple(int(x) for x in rng.integers(0, MASK, 3 + (i * 5) % 20))
    choices = tuple(tuple(int(x) for x in rng.integers(0, MASK, 1 + (i + j) % 4)) for j in range(3))
    out.append(mc_scoring.McItem(ctx, choices, i % 3))
  return out


def _per_batch_scores(params, apply_fn, items, method: str, elbo: ElboSettings, max_len: int,
                      batch_size: int) -> list[np.ndarray]:
  """The path score_items replaces: one jitted call and one fetch per padded batch of each bucket."""
  fn = {"ar": functools.partial(mc_scoring.ar_logprob, mask_id=MASK),
        "elbo": functools.partial(mc_scoring.mdm_elbo_score, mask_id=MASK, schedule=elbo.schedule,
                                  num_samples=elbo.num_samples, seed=elbo.seed, estimator=elbo.estimator,
                                  t_min=elbo.clipped),
        "chain": functools.partial(mc_scoring.mdm_chain_logprob, mask_id=MASK,
                                   max_choice_len=max(len(c) for it in items for c in it.choices))}[method]
  step = jax.jit(lambda p, *a: fn(p, apply_fn, *a))
  scores = [np.full(len(it.choices), np.nan) for it in items]
  for rows in mc_scoring.build_rows(items, max_len, 1):
    n = len(rows.where_N)
    for lo in range(0, n, batch_size):
      idx_B = np.minimum(np.arange(lo, lo + batch_size), n - 1)
      out_B = np.asarray(step(params, rows.tokens_NxL[idx_B], rows.start_N[idx_B], rows.length_N[idx_B],
                              rows.item_N[idx_B]), np.float64)
      for r in range(lo, min(lo + batch_size, n)):
        i, j = rows.where_N[r]
        scores[i][j] = out_B[r - lo]
  return scores


@pytest.mark.parametrize("method", ["ar", "elbo", "chain"])
def test_score_items_equals_the_per_batch_scores_and_jits_once(method):
  max_len, batch_size = 32, 5
  apply_fn, params = apply_and_params(method, V, max_len)
  params = jax.tree.map(lambda x: 4.0 * x, params)  # sharper predictions: scores far apart
  apply_fn = jax.jit(apply_fn)
  items = _items(9)  # 27 rows in two buckets, each with a padded last batch
  assert [len(r.where_N) % batch_size > 0 for r in mc_scoring.build_rows(items, max_len, 1)] == [True, True]
  elbo = ElboSettings(LinearSchedule(), 4, 3)
  score = lambda: mc_scoring.score_items(params, apply_fn, items, method=method, max_len=max_len,  # noqa: E731
                                         pad_id=1, mask_id=MASK, batch_size=batch_size, elbo=elbo)
  mc_scoring.make_scorer.cache_clear()
  first, second = score(), score()
  want = _per_batch_scores(params, apply_fn, items, method, elbo, max_len, batch_size)
  for a, b, w in zip(first, second, want, strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, w, rtol=1e-6)
  assert mc_scoring.make_scorer.cache_info().misses == 1
  max_choice = max(len(c) for it in items for c in it.choices) if method == "chain" else 1
  scorer = mc_scoring.make_scorer(method, apply_fn, mask_id=MASK, elbo=elbo, max_choice_len=max_choice)
  assert mc_scoring.make_scorer.cache_info().misses == 1  # the very scorer score_items used
  assert scorer._cache_size() == 2  # one trace per length bucket, both reused by the second call
