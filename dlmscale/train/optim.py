"""One optimizer recipe for both families: AdamW, clipping, warmup + cosine or WSD schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dlmscale.errors import UserError


def warmup_steps(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> int:
  if optim_cfg.warmup_steps > 0:
    return min(int(optim_cfg.warmup_steps), total_steps)
  return int(round(optim_cfg.warmup_frac * total_steps))


def wsd_decay_start(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> int:
  """The step at which a WSD run of `total_steps` leaves its peak rate: where its cooldown branch
  starts from a constant-rate trunk (lr_schedule's warmup + stable steps)."""
  warm = warmup_steps(optim_cfg, total_steps)
  decay = max(int(round(optim_cfg.decay_frac * total_steps)), 1)
  return warm + max(max(total_steps - warm, 1) - decay, 0)


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


def schedule_args(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> dict[str, np.ndarray]:
  """lr_schedule's constants as arrays, so one compiled train step serves every run length and lr.

  Derived constants are computed in double precision and rounded once, as optax does with the
  Python numbers lr_schedule gives it. The traced schedule is the same formula, but XLA no longer
  folds its constants together (pi / T, 0.5 * (1 - alpha), ...), so an lr can differ from the
  per-run program's in the last bits (relative 2e-6 at most, tests/test_shared_step.py): runs trained
  before this change are reproduced to float rounding, not bit for bit.
  """
  if optim_cfg.schedule not in ("cosine", "wsd", "constant"):
    raise UserError(f"unknown optim.schedule {optim_cfg.schedule!r}; use cosine, wsd or constant")
  peak, ratio = optim_cfg.lr, optim_cfg.min_lr_ratio
  floor = peak * ratio
  warm = warmup_steps(optim_cfg, total_steps)
  rest = max(total_steps - warm, 1)
  decay = max(int(round(optim_cfg.decay_frac * total_steps)), 1)
  f32, i32 = np.float32, np.int32
  return {"peak": f32(peak), "neg_peak": f32(0.0 - peak), "warm": i32(warm), "warm_T": i32(max(warm, 1)),
          "rest_f": f32(float(rest)), "alpha": f32(ratio), "one_minus_alpha": f32(1 - ratio),
          "stable": i32(max(rest - decay, 0)), "decay": i32(decay), "floor": f32(floor),
          "peak_minus_floor": f32(peak - floor)}


def traced_schedule(kind: str, args: dict[str, jax.Array]) -> optax.Schedule:
  """lr_schedule with its constants taken from `args` (schedule_args): the same operations, in the
  same order, as optax's linear_schedule, cosine_decay_schedule and join_schedules."""
  def warmup(count):
    count = jnp.clip(count - 0, 0, args["warm_T"])
    frac = 1 - count / args["warm_T"]
    return args["neg_peak"] * (frac**1) + args["peak"]

  def cosine(count):
    count = jnp.minimum(count, args["rest_f"])
    cosine_decay = 0.5 * (1 + jnp.cos(jnp.pi * count / args["rest_f"]))
    return args["peak"] * (args["one_minus_alpha"] * cosine_decay**1.0 + args["alpha"])

  def wsd(count):
    def decay(c):
      c = jnp.clip(c - 0, 0, args["decay"])
      frac = 1 - c / args["decay"]
      return args["peak_minus_floor"] * (frac**1) + args["floor"]
    return jnp.where(count < args["stable"], args["peak"], decay(count - args["stable"]))

  main = {"cosine": cosine, "wsd": wsd, "constant": lambda count: args["peak"]}[kind]

  def schedule(step):
    return jnp.where(step < args["warm"], warmup(step), main(step - args["warm"]))
  return schedule


def decay_mask(params: dict) -> dict:
  """Weight decay on matrices only: norm scales (1-D) and embeddings are left alone."""
  def keep(path, leaf) -> bool:
    names = [str(getattr(k, "key", k)) for k in path]
    return leaf.ndim >= 2 and not any("embed" in n for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg: ml_collections.ConfigDict, total_steps: int | None = None,
                   schedule: optax.Schedule | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with lr_schedule(total_steps), or with `schedule` (e.g. a traced_schedule)."""
  if optim_cfg.lr <= 0:
    raise UserError(f"optim.lr must be positive, got {optim_cfg.lr}")
  if schedule is None:
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
