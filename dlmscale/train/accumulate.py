"""Gradient accumulation: one optimizer step's gradient summed over micro-batches with lax.scan.

`batch_size` stays the global batch; `micro_batch_size` only says how many sequences one forward and
backward pass holds. The step's randomness (diffusion times and masks, AR token orders) is drawn once
for the whole batch (objectives.make_draw_fn) and sliced, so every sequence sees what it would see
unsplit: loss and gradient differ from the unsplit step only by float summation order.

Micro-batch i takes rows i, i + n, i + 2n, ... of the batch: a batch sharded over devices in
contiguous blocks gives every device its share of every micro-batch (when n divides the rows per
device), so no micro-batch idles part of the mesh.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def split(tree: Any, n: int) -> Any:
  """[B, ...] leaves -> [n, B / n, ...], micro-batch i holding rows i, i + n, ..."""
  def one(x):
    b = x.shape[0]
    return jnp.swapaxes(x.reshape((b // n, n) + x.shape[1:]), 0, 1)
  return jax.tree.map(one, tree)


def loss_and_grad(loss_fn: Callable, draw_fn: Callable, n_micro: int, params: Any, apply_fn: Callable,
                  batch: dict, rng: jax.Array) -> tuple[tuple[jax.Array, dict], Any]:
  """((loss, aux), grads) as jax.value_and_grad(loss_fn, has_aux=True) gives them for the whole batch.

  The loss is the mean of the micro-batch losses (equal sizes, so the batch mean); gradients are
  summed in float32 and scaled once. aux metrics are means over the micro-batches (for ratios such as
  masked_nll, the mean of the micro-batch ratios).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  micro = split({**batch, **draw_fn(batch, rng)}, n_micro)
  f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)

  def body(carry, micro_batch):
    (loss, aux), grads = grad_fn(params, apply_fn, micro_batch, rng)
    loss_sum, aux_sum, grad_sum = carry
    carry = (loss_sum + loss.astype(jnp.float32), jax.tree.map(jnp.add, aux_sum, f32(aux)),
             jax.tree.map(jnp.add, grad_sum, f32(grads)))
    return carry, None

  first = jax.tree.map(lambda x: x[0], micro)
  aux_shape = jax.eval_shape(lambda: grad_fn(params, apply_fn, first, rng)[0][1])
  zeros = lambda t: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), t)
  init = (jnp.zeros((), jnp.float32), zeros(aux_shape), zeros(params))
  (loss_sum, aux_sum, grad_sum), _ = jax.lax.scan(body, init, micro)
  scale = 1.0 / n_micro
  grads = jax.tree.map(lambda g, p: (g * scale).astype(p.dtype), grad_sum, params)
  aux = jax.tree.map(lambda a: a * scale, aux_sum)
  return (loss_sum * scale, aux), grads
