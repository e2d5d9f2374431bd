"""Gradient accumulation: the split step equals the unsplit one, and a killed run resumes bitwise."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.tiny_model import apply_and_params, max_rel

from conftest import tiny_config
from configs import base
from dlmscale import objectives
from dlmscale.errors import UserError
from dlmscale.model import transformer as model_lib
from dlmscale.train import accumulate
from dlmscale.train import config_checks
from helpers.runs import final_params, losses, run_main

VOCAB, B, L = 48, 8, 16


def _config(objective: str, **ar):
  c = base.get_config()
  c.objective, c.batch_size, c.data.seq_len = objective, B, L
  c.ar.num_orders = ar.get("num_orders", 1)
  return c


@pytest.mark.parametrize("objective", ["ar", "mdm"])
@pytest.mark.parametrize("n_micro", [2, 4])
def test_split_step_equals_the_unsplit_step(objective, n_micro):
  config = _config(objective)
  mask_id = VOCAB - 1
  loss_fn, draw_fn = objectives.make_loss_fn(config, mask_id), objectives.make_draw_fn(config, mask_id)
  apply_fn, params = apply_and_params(objective, VOCAB, L)
  batch = {"tokens": jax.random.randint(jax.random.key(1), (B, L), 0, VOCAB - 1)}
  rng = jax.random.key(7)
  (loss, aux), grads = jax.jit(lambda p: jax.value_and_grad(loss_fn, has_aux=True)(p, apply_fn, batch, rng))(params)
  (loss_n, aux_n), grads_n = jax.jit(
      lambda p: accumulate.loss_and_grad(loss_fn, draw_fn, n_micro, p, apply_fn, batch, rng))(params)
  assert abs(float(loss_n) - float(loss)) <= 1e-6 * abs(float(loss))
  assert max_rel(grads_n, grads) <= 1e-6
  assert set(aux_n) == set(aux)
  if objective == "mdm":  # the same draws: mask_rate is a mean of equal-sized micro-batch means
    np.testing.assert_allclose(aux_n["mask_rate"], aux["mask_rate"], rtol=1e-6)


def test_split_step_keeps_the_token_orders():
  config = _config("ar", num_orders=3)
  loss_fn, draw_fn = objectives.make_loss_fn(config, VOCAB - 1), objectives.make_draw_fn(config, VOCAB - 1)
  cfg = model_lib.ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=L,
                              target_position_embedding=True)
  model = model_lib.Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, L), jnp.int32))["params"]
  apply_fn = lambda p, tokens, **kw: model.apply({"params": p}, tokens, **kw)
  batch = {"tokens": jax.random.randint(jax.random.key(1), (B, L), 0, VOCAB - 1)}
  rng = jax.random.key(3)
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, apply_fn, batch, rng)
  (loss_n, _), grads_n = accumulate.loss_and_grad(loss_fn, draw_fn, 4, params, apply_fn, batch, rng)
  assert abs(float(loss_n) - float(loss)) <= 1e-6 * abs(float(loss))
  assert max_rel(grads_n, grads) <= 1e-6


def test_micro_batches_take_strided_rows():
  x = jnp.arange(8)
  np.testing.assert_array_equal(accumulate.split(x, 2), [[0, 2, 4, 6], [1, 3, 5, 7]])


@pytest.mark.parametrize("micro, message", [(3, "must divide batch_size=8"), (-1, "whole number >= 0")])
def test_bad_micro_batch_size_is_one_line(micro, message):
  config = _config("ar")
  config.micro_batch_size = micro
  with pytest.raises(UserError, match=message) as e:
    config_checks.validate(config)
  assert "\n" not in str(e.value)


def test_kill_and_resume_with_accumulation_is_bitwise_exact(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm", micro_batch_size=2)
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  assert run_main(cfg, straight).returncode == 0
  assert run_main(cfg, broken, DLMSCALE_FAULT="kill:8").returncode == -9
  resumed = run_main(cfg, broken)
  assert resumed.returncode == 0, resumed.stderr
  assert int(re.search(r"resuming at step (\d+)", resumed.stdout).group(1)) in (3, 6)
  assert losses(broken) == losses(straight)
  for x, y in zip(jax.tree.leaves(final_params(straight)), jax.tree.leaves(final_params(broken))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_accumulation_on_four_cpu_devices_matches_one_device_unsplit(tiny_corpus, data_cache, tmp_path):
  """Micro-batches over a data x fsdp mesh: each device holds its rows of every micro-batch."""
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  assert run_main(cfg, tmp_path / "one").returncode == 0
  cfg4 = tiny_config(tiny_corpus, data_cache, "mdm", micro_batch_size=4, **{"mesh.data": 2, "mesh.fsdp": 2})
  four = run_main(cfg4, tmp_path / "four", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  assert four.returncode == 0, four.stderr
  la, lb = losses(tmp_path / "one"), losses(tmp_path / "four")
  assert [r[:2] for r in la] == [r[:2] for r in lb]
  np.testing.assert_allclose([r[2] for r in la], [r[2] for r in lb], rtol=2e-4)
