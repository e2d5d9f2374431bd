"""A tiny transformer and a relative-difference measure, for tests that compare two ways of
computing the same loss or gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlmscale.model import transformer as model_lib


def apply_and_params(objective: str, vocab: int, length: int, tie: bool = True, **kw):
  """(apply_fn, params) of a 2-layer d_model 32 model; `kw` sets other ModelConfig fields."""
  cfg = model_lib.ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                              max_len=length, causal=objective == "ar", tie_embeddings=tie, **kw)
  model = model_lib.Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))["params"]
  return (lambda p, tokens, **kw: model.apply({"params": p}, tokens, **kw)), params


def max_rel(a, b) -> float:
  """The largest leaf-wise max |a - b| / max |b| over two pytrees."""
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
