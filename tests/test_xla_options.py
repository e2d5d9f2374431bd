"""The XLA options the steps compile with: the pinned jaxlib accepts the CPU defaults and they do
what xla_options.py says (YNNPACK only for matmuls); overrides are parsed strictly; bad ones fail
with a message that names the variable."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from dlmscale.runtime import xla_options
from dlmscale.errors import UserError


def _rmsnorm_grad_hlo(options: dict[str, str] | None) -> str:
  def f(x_NxD, s_D):
    return jnp.sum(x_NxD * jax.lax.rsqrt(jnp.mean(x_NxD * x_NxD, -1, keepdims=True) + 1e-6) * s_D)
  args = (jnp.ones((1024, 256)), jnp.ones(256))
  return jax.jit(jax.grad(f), compiler_options=options).lower(*args).compile().as_text()


def _ynn_fusions(hlo: str) -> int:
  return len(re.findall(r"__ynn_fusion", hlo))


def test_parse():
  assert xla_options.parse("none") == {} and xla_options.parse(" ") == {}
  assert xla_options.parse("a=1, b=x=y") == {"a": "1", "b": "x=y"}
  for bad in ("a", "a=1,b", "=1"):
    with pytest.raises(UserError, match="KEY=VALUE pairs"):
      xla_options.parse(bad)


def test_cpu_defaults_are_accepted_and_keep_ynnpack_to_matmuls(monkeypatch):
  monkeypatch.delenv(xla_options.ENV, raising=False)
  options = xla_options.for_backend("cpu")
  assert options == xla_options.DEFAULTS["cpu"]  # the pinned jaxlib accepts them
  assert xla_options.for_backend("gpu") is None and xla_options.for_backend("tpu") is None
  # XLA's default sends this elementwise/reduction backward to YNNPACK; ours leaves it to XLA.
  assert _ynn_fusions(_rmsnorm_grad_hlo(None)) >= 1
  assert _ynn_fusions(_rmsnorm_grad_hlo(options)) == 0


def test_environment_override(monkeypatch):
  monkeypatch.setenv(xla_options.ENV, "none")
  assert xla_options.for_backend("cpu") is None
  monkeypatch.setenv(xla_options.ENV, "xla_cpu_enable_fast_min_max=False")
  assert xla_options.for_backend("cpu") == {"xla_cpu_enable_fast_min_max": "False"}
  monkeypatch.setenv(xla_options.ENV, "xla_cpu_no_such_option=1")
  with pytest.raises(UserError, match=f"{xla_options.ENV}=.*rejected by XLA"):
    xla_options.for_backend("cpu")


def test_rejected_default_falls_back_with_a_warning(monkeypatch, caplog):
  monkeypatch.delenv(xla_options.ENV, raising=False)
  monkeypatch.setitem(xla_options.DEFAULTS, "cpu", {"xla_cpu_no_such_option": "1"})
  assert xla_options.for_backend("cpu") is None
  assert "XLA rejects the default options" in caplog.text
