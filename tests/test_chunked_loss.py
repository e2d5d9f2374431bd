"""The memory-lean loss (model.loss_chunk): the same numbers as the full-logits path, less memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from helpers.tiny_model import apply_and_params, max_rel

from configs import base
from dlmscale import objectives
from dlmscale.objectives import nll

VOCAB, B, L = 48, 4, 15  # an odd length: the chunks do not divide it


def _config(objective: str, chunk: int, **extra):
  c = base.get_config()
  c.objective, c.batch_size, c.data.seq_len, c.model.loss_chunk = objective, B, L, chunk
  c.eval.mc_samples = 3
  for k, v in extra.items():
    c.ar[k] = v
  return c


def _tokens():
  return jax.random.randint(jax.random.key(1), (B, L), 0, VOCAB - 1)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
@pytest.mark.parametrize("chunk, tie", [(4, True), (16, True), (5, False)])
def test_chunked_loss_and_gradients_match_full_logits(objective, chunk, tie):
  apply_fn, params = apply_and_params(objective, VOCAB, L, tie)
  batch, rng = {"tokens": _tokens()}, jax.random.key(5)

  def run(c):
    loss_fn = objectives.make_loss_fn(_config(objective, c), VOCAB - 1)
    return jax.jit(lambda p: jax.value_and_grad(loss_fn, has_aux=True)(p, apply_fn, batch, rng))(params)

  (loss, aux), grads = run(0)
  (loss_c, aux_c), grads_c = run(chunk)
  assert abs(float(loss_c) - float(loss)) <= 1e-5 * abs(float(loss))
  assert max_rel(grads_c, grads) <= 1e-5
  for k in aux:
    assert abs(float(aux_c[k]) - float(aux[k])) <= 1e-5 * max(abs(float(aux[k])), 1.0), k


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_chunked_eval_matches_full_logits(objective):
  apply_fn, params = apply_and_params(objective, VOCAB, L)
  ids_B = jnp.arange(B)
  full = objectives.make_eval_fn(_config(objective, 0), VOCAB - 1)(params, apply_fn, _tokens(), ids_B)
  lean = objectives.make_eval_fn(_config(objective, 4), VOCAB - 1)(params, apply_fn, _tokens(), ids_B)
  assert float(jnp.max(jnp.abs(lean - full) / jnp.abs(full))) <= 1e-5


def test_chunked_token_orders_match_full_logits():
  apply_fn, params = apply_and_params("ar", VOCAB, L, target_position_embedding=True)
  batch, rng = {"tokens": _tokens()}, jax.random.key(2)
  out = [jax.value_and_grad(objectives.make_loss_fn(_config("ar", c, num_orders=3), VOCAB - 1), has_aux=True)(
      params, apply_fn, batch, rng) for c in (0, 4)]
  assert abs(float(out[1][0][0]) - float(out[0][0][0])) <= 1e-5 * float(out[0][0][0])
  assert max_rel(out[1][1], out[0][1]) <= 1e-5


def test_bf16_chunks_compute_logits_in_bf16_and_stay_close():
  apply_fn, params = apply_and_params("ar", VOCAB, L, dtype="bfloat16")
  hidden, head = apply_fn(params, _tokens(), hidden=True)
  assert hidden.dtype == head.dtype == jnp.bfloat16
  full = objectives.make_loss_fn(_config("ar", 0), VOCAB - 1)(params, apply_fn, {"tokens": _tokens()}, None)[0]
  lean = objectives.make_loss_fn(_config("ar", 4), VOCAB - 1)(params, apply_fn, {"tokens": _tokens()}, None)[0]
  assert lean.dtype == jnp.float32 and abs(float(lean) - float(full)) < 2e-2 * float(full)


def test_backward_never_holds_the_full_logits():
  """Compiled temporaries of loss + gradient at a vocabulary large enough to dominate them."""
  Bx, Lx, V, D = 8, 256, 8192, 32
  h = jax.random.normal(jax.random.key(0), (Bx, Lx, D))
  w = jax.random.normal(jax.random.key(1), (V, D))
  t = jax.random.randint(jax.random.key(2), (Bx, Lx), 0, V - 1)

  def temp_bytes(chunk):
    def loss(h, w):
      if chunk:
        return jnp.mean(nll.chunked_nll(h, w, t, None, chunk)[0])
      return jnp.mean(nll.token_nll(jnp.einsum("BLD,VD->BLV", h, w), t))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(h, w).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  full_logits = Bx * Lx * V * 4
  assert temp_bytes(0) >= full_logits
  assert temp_bytes(8) < full_logits / 8  # a few [B, 8, V] chunk buffers


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_the_compiled_train_step_with_chunks_and_micro_batches_matches_the_default(objective, tiny_corpus,
                                                                                  data_cache):
  """steps.build end to end: one step's loss and updated params, default vs loss_chunk + accumulation."""
  import numpy as np
  from conftest import tiny_config
  from dlmscale.data import pipeline
  from dlmscale.runtime import sharding
  from dlmscale.train import steps as program

  def one_step(**overrides):
    cfg = tiny_config(tiny_corpus, data_cache, objective, **overrides)
    prepared = pipeline.prepare(cfg.data)
    mesh = sharding.make_mesh(cfg.mesh)
    setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, total_steps=10, mesh=mesh)
    tokens = np.asarray(prepared.train_chunks[:cfg.batch_size], np.int32)
    with jax.set_mesh(mesh):
      state, metrics = setup.train_step(setup.init(), program.put_batch(tokens, setup))
    return jax.device_get(metrics), jax.device_get(state.params)

  m0, p0 = one_step()
  m1, p1 = one_step(**{"model.loss_chunk": 8, "micro_batch_size": 4})
  assert abs(m1["loss"] - m0["loss"]) <= 1e-5 * abs(m0["loss"])
  assert abs(m1["grad_norm"] - m0["grad_norm"]) <= 1e-5 * m0["grad_norm"]
  assert max_rel(p1, p0) <= 1e-5
