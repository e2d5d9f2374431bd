"""Splash attention (the Pallas TPU kernel) against XLA's attention, run in Pallas interpret mode on
CPU: outputs and gradients for the causal (AR) and full (masked-diffusion) masks, the kernel through
the model, and how `model.attention` is chosen per platform and shape."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from dlmscale.errors import UserError
from dlmscale.model import attention
from dlmscale.model.transformer import ModelConfig, Transformer
from dlmscale.train.steps import model_config_from

B, L, H, K = 2, 256, 2, 64  # two 128-position tiles per axis: the causal mask skips a block


def _qkv(seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  return tuple(jax.random.normal(k, (B, L, H, K), jnp.float32) for k in jax.random.split(jax.random.key(seed), 3))


def _rel(a: jax.Array, b: jax.Array) -> float:
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_splash_matches_xla_outputs_and_gradients_in_interpret_mode(causal):
  q, k, v = _qkv()
  w = jax.random.normal(jax.random.key(1), (B, L, H, K))  # a loss whose gradient is not uniform

  def loss(fn):
    return lambda q, k, v: jnp.sum(w * fn(q, k, v))

  splash = lambda q, k, v: attention.splash(q, k, v, causal, interpret=True, block=128)  # noqa: E731
  xla = lambda q, k, v: attention.dot_product(q, k, v, causal, "xla")  # noqa: E731
  out_s, grads_s = jax.value_and_grad(loss(splash), argnums=(0, 1, 2))(q, k, v)
  out_x, grads_x = jax.value_and_grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
  assert _rel(splash(q, k, v), xla(q, k, v)) < 1e-5
  assert abs(float(out_s - out_x)) <= 1e-5 * abs(float(out_x)) + 1e-4
  for g_s, g_x in zip(grads_s, grads_x):
    assert _rel(g_s, g_x) < 1e-5


@pytest.mark.slow
def test_the_model_runs_splash_with_the_mask_of_its_objective():
  """The transformer with attention='splash' gives XLA's logits, causal for AR and full for MDM."""
  for causal in (True, False):
    cfg = ModelConfig(vocab_size=32, d_model=2 * K, n_layers=1, n_heads=2, d_ff=64, max_len=L,
                      causal=causal)
    tokens = jax.random.randint(jax.random.key(2), (1, L), 0, 31)
    params = Transformer(cfg).init(jax.random.key(3), tokens)
    splash_cfg = dataclasses.replace(cfg, attention="splash", splash_interpret=True)
    want, got = Transformer(cfg).apply(params, tokens), Transformer(splash_cfg).apply(params, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_auto_is_splash_on_tpu_only_and_xla_where_the_shape_cannot():
  assert attention.choose("auto", "tpu", 2048, 64) == ("splash", "TPU")
  for platform in ("cpu", "gpu"):
    assert attention.choose("auto", platform, 2048, 64)[0] == "xla"
  impl, why = attention.choose("auto", "tpu", 2000, 64)
  assert impl == "xla" and "seq_len=2000" in why and "128" in why
  impl, why = attention.choose("auto", "tpu", 2048, 48)
  assert impl == "xla" and "head_dim=48" in why
  assert attention.choose("xla", "tpu", 2000, 48) == ("xla", "asked for")


@pytest.mark.parametrize("platform,seq_len,needle", [("cpu", 2048, "TPU kernel"),
                                                     ("tpu", 200, "seq_len=200")])
def test_explicit_splash_that_cannot_run_is_a_one_line_user_error(platform, seq_len, needle):
  with pytest.raises(UserError, match=needle) as e:
    attention.choose("splash", platform, seq_len, 64)
  assert "\n" not in str(e.value) and "auto" in str(e.value)


def test_run_configs_resolve_auto_for_the_platform():
  c = base.get_config()
  assert c.model.attention == "xla"  # the default; the cluster preset asks for auto
  c.model.attention = "auto"
  c.data.seq_len, c.model_size = 256, "s10M"  # head_dim 64
  assert model_config_from(c, 64).attention == "xla"  # this host: CPU
  assert model_config_from(c, 64, platform="tpu").attention == "splash"
  c.model.attention = "splash"
  with pytest.raises(UserError, match="TPU kernel"):
    model_config_from(c, 64, platform="cpu")
