"""One compiled train step per shape: the seed and the lr schedule are arguments of the program
(dlmscale/train/steps.py run_args), and the traced schedule is optax's to float rounding (XLA folds the
constants of a per-run program together, which it cannot do with arguments)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from configs import base
from dlmscale.train import optim
from dlmscale.train import steps as program
from dlmscale.runtime import sharding
from dlmscale.data import pipeline


@pytest.mark.parametrize("kind,warmup", [("cosine", 0.0), ("cosine", 0.05), ("wsd", 0.3),
                                         ("constant", 0.05)])
def test_traced_schedule_is_lr_schedule_to_float_rounding(kind, warmup):
  c = base.get_config().optim
  c.schedule, c.warmup_frac, c.lr, c.min_lr_ratio = kind, warmup, 2.5e-3, 0.1
  steps_S = jnp.arange(3300, dtype=jnp.int32)  # past the end too: a schedule holds its floor
  traced = jax.jit(lambda args: jax.lax.map(optim.traced_schedule(kind, args), steps_S))
  for total in (1, 12, 203, 3200):
    want = np.asarray(jax.jit(lambda: jax.lax.map(optim.lr_schedule(c, total), steps_S))())
    got = np.asarray(traced(jax.tree.map(jnp.asarray, optim.schedule_args(c, total))))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12, err_msg=f"{kind} total={total}")


def _build(cfg, total: int) -> program.Setup:
  prepared = pipeline.prepare(cfg.data)
  return program.build(cfg, prepared.vocab_size, prepared.mask_id, total, sharding.make_mesh(cfg.mesh))


def _lowered_text(cfg, total: int) -> str:
  program._PROGRAMS.clear()  # as a fresh process would trace it
  setup = _build(cfg, total)
  mesh = setup.mesh
  tokens = jax.ShapeDtypeStruct((cfg.batch_size, cfg.data.seq_len), jnp.int32, sharding=setup.batch_sharding)
  with jax.set_mesh(mesh):
    return setup.train_step.lower(setup.abstract_state, tokens).as_text()


def test_runs_differing_in_seed_length_and_lr_share_one_program(tiny_corpus, data_cache):
  a = tiny_config(tiny_corpus, data_cache, "mdm")
  b = tiny_config(tiny_corpus, data_cache, "mdm", seed=7, epochs=9.0, **{"optim.lr": 3e-4})
  assert _lowered_text(a, 12) == _lowered_text(b, 37)
  other = tiny_config(tiny_corpus, data_cache, "ar")  # another objective is another program
  assert _lowered_text(other, 12) != _lowered_text(a, 12)


def test_a_process_reuses_the_programs_of_a_shape(tiny_corpus, data_cache):
  program._PROGRAMS.clear()
  a = _build(tiny_config(tiny_corpus, data_cache, "mdm"), 12)
  b = _build(tiny_config(tiny_corpus, data_cache, "mdm", seed=3, **{"optim.lr": 1e-3}), 40)
  c = _build(tiny_config(tiny_corpus, data_cache, "mdm", **{"model.d_ff": 128}), 12)
  assert b.train_step.jitted is a.train_step.jitted and b.eval_step is a.eval_step
  assert c.train_step.jitted is not a.train_step.jitted and c.eval_step is not a.eval_step
  assert b.schedule(40) != a.schedule(40)  # each run keeps its own schedule and seed
  assert not (b.train_step.run_args["key"] == a.train_step.run_args["key"]).all()


@pytest.mark.slow
def test_train_step_uses_the_runs_own_schedule(tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache, "ar", **{"optim.warmup_steps": 3})
  prepared = pipeline.prepare(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  total = 6
  setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, total, mesh)
  want = optim.lr_schedule(cfg.optim, total)
  tokens = np.asarray(prepared.train_chunks[:cfg.batch_size], np.int32)
  with jax.set_mesh(mesh):
    state = setup.init()
    for step in range(total):
      state, m = setup.train_step(state, program.put_batch(tokens, setup))
      assert np.float32(jax.device_get(m["lr"])) == np.float32(jax.jit(want)(step))
