"""One optimizer recipe for both families: AdamW, clipping, warmup + cosine or WSD schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dlmscale.errors import UserError


def warmup_steps(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> int:
  if optim_cfg.warmup_steps > 0:
    return min(int(optim_cfg.warmup_steps), total_steps)
  return int(round(optim_cfg.warmup_frac * total_steps))


def lr_schedule(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine to `min_lr_ratio * lr`, WSD (flat, then linear decay) or constant."""
  peak, floor = optim_cfg.lr, optim_cfg.lr * optim_cfg.min_lr_ratio
  warm = warmup_steps(optim_cfg, total_steps)
  rest = max(total_steps - warm, 1)
  warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
  if optim_cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, rest, alpha=optim_cfg.min_lr_ratio)
  elif optim_cfg.schedule == "wsd":
    decay = max(int(round(optim_cfg.decay_frac * total_steps)), 1)
    stable = max(rest - decay, 0)
    main = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)], [stable])
  elif optim_cfg.schedule == "constant":
    main = optax.constant_schedule(peak)
  else:
    raise UserError(f"unknown optim.schedule {optim_cfg.schedule!r}; use cosine, wsd or constant")
  if warm == 0:
    return main
  return optax.join_schedules([warmup, main], [warm])


def decay_mask(params: dict) -> dict:
  """Weight decay on matrices only: norm scales (1-D) and embeddings are left alone."""
  def keep(path, leaf) -> bool:
    names = [str(getattr(k, "key", k)) for k in path]
    return leaf.ndim >= 2 and not any("embed" in n for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  if optim_cfg.lr <= 0:
    raise UserError(f"optim.lr must be positive, got {optim_cfg.lr}")
  schedule = lr_schedule(optim_cfg, total_steps)
  mask = None if optim_cfg.decay_norms_and_embeddings else decay_mask
  tx = optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip) if optim_cfg.grad_clip > 0 else optax.identity(),
      optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                  weight_decay=optim_cfg.weight_decay, mask=mask),
  )
  return tx, schedule


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
