"""A run's config checked once, where it enters (the trainer, the AOT compiler), before anything runs.

Library functions below this point trust the config and raise only about their own arguments.
"""

from __future__ import annotations

import math

import ml_collections

from dlmscale import objectives
from dlmscale.data import evalset, label_noise, pipeline
from dlmscale.objectives import masking, orders
from dlmscale.errors import UserError
from dlmscale.train import optim, profiler, tracking


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(config: ml_collections.ConfigDict) -> None:
  """Every range the config must satisfy, checked before anything is read or written.

  Comparisons are written `not (x > 0)` style so NaN fails them too.
  """
  _require(config.objective in ("ar", "mdm"), f"objective must be 'ar' or 'mdm', got {config.objective!r}")
  for key in ("unique_tokens", "batch_size", "log_every_steps"):
    _require(config[key] > 0, f"{key} must be positive, got {config[key]}")
  _require(_is_number(config.epochs) and config.epochs > 0,
           f"epochs must be a positive number, got {config.epochs}")
  _require(config.seed >= 0, f"seed must be >= 0, got {config.seed}")
  _require(config.data.seq_len > 1, f"data.seq_len must be at least 2, got {config.data.seq_len}")
  micro = config.get("micro_batch_size", 0)
  _require(isinstance(micro, int) and not isinstance(micro, bool) and micro >= 0,
           f"micro_batch_size must be a whole number >= 0 (0 = no accumulation), got {micro!r}")
  _require(micro == 0 or config.batch_size % micro == 0,
           f"micro_batch_size={micro} must divide batch_size={config.batch_size} (0 = no accumulation)")
  chunk = config.model.get("loss_chunk", 0)
  _require(isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0,
           f"model.loss_chunk must be a whole number >= 0 (0 = full logits), got {chunk!r}")
  orders.num_orders(config)  # bad token-order settings fail before the run directory exists
  label_noise.check_fraction(config.data.get("label_noise", 0.0))
  profiler.parse(config.get("profile_steps", ""))
  tracking.check(config)
  for sect, key in (("eval", "every_steps"), ("checkpoint", "every_steps"), ("eval", "num_sequences"),
                    ("eval", "batch_size"), ("eval", "mc_samples"), ("checkpoint", "keep")):
    _require(config[sect][key] > 0, f"{sect}.{key} must be positive, got {config[sect][key]}")
  _require(config.eval.get("set", "val") in evalset.SETS,
           f"eval.set must be one of {', '.join(evalset.SETS)}, got {config.eval.get('set')!r}")
  n = config.eval.task_every
  _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0,
           f"eval.task_every must be a whole number >= 0 (0 = off), got {n!r}")
  o = config.optim
  _require(_is_number(o.lr) and o.lr > 0, f"optim.lr must be a positive number, got {o.lr}")
  for key in ("warmup_frac", "min_lr_ratio", "decay_frac"):
    _require(_is_number(o[key]) and 0 <= o[key] <= 1, f"optim.{key} must lie in [0, 1], got {o[key]}")
  for key in ("b1", "b2"):
    _require(_is_number(o[key]) and 0 <= o[key] < 1, f"optim.{key} must lie in [0, 1), got {o[key]}")
  _require(_is_number(o.eps) and o.eps > 0, f"optim.eps must be positive, got {o.eps}")
  for key in ("weight_decay", "grad_clip", "warmup_steps"):
    _require(_is_number(o[key]) and o[key] >= 0, f"optim.{key} must be >= 0, got {o[key]}")
  _require(_is_number(config.mdm.t_min) and 0 < config.mdm.t_min < 1,
           f"mdm.t_min must lie in (0, 1), got {config.mdm.t_min}")
  _require(config.mdm.schedule in masking.SCHEDULES,
           f"unknown mdm.schedule {config.mdm.schedule!r}; choose one of {', '.join(masking.SCHEDULES)}")
  _require(config.mdm.schedule != "poly" or (_is_number(config.mdm.poly_exponent) and config.mdm.poly_exponent > 0),
           f"mdm.poly_exponent must be > 0, got {config.mdm.poly_exponent}")
  _require(config.eval.mdm_estimator in objectives.ESTIMATORS,
           f"unknown eval.mdm_estimator {config.eval.mdm_estimator!r}; choose one of "
           f"{', '.join(objectives.ESTIMATORS)}")
  _require(config.eval.mdm_estimator != "count" or config.mdm.schedule == "linear",
           "eval.mdm_estimator='count' assumes the linear masking schedule (mdm.schedule=linear); use 'time'")
  positions = config.eval.get("mdm_positions", "all")
  _require(positions in objectives.EVAL_POSITIONS,
           f"eval.mdm_positions={positions!r}: choose one of {', '.join(objectives.EVAL_POSITIONS)}")
  # The budget needs no data: a sequence length no budget can fill fails here, not after preparing.
  total = pipeline.steps_for_budget(config.unique_tokens, config.epochs, config.batch_size, config.data.seq_len)
  _check_eval_schedule(config.eval)
  _check_trunk_and_branch(config, total)


def _is_count(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_eval_schedule(e: ml_collections.ConfigDict) -> None:
  schedule, points = e.get("schedule", "fixed"), e.get("log_points", 16)
  _require(schedule in ("fixed", "log"), f"eval.schedule must be 'fixed' or 'log', got {schedule!r}")
  _require(_is_count(points) and points >= 2, f"eval.log_points must be a whole number >= 2, got {points!r}")


def _check_trunk_and_branch(config: ml_collections.ConfigDict, total: int) -> None:
  """A trunk (trunk.branch_steps) trains at a constant rate; a branch (branch.trunk) is a WSD run
  whose decay starts at branch.start_step. Both fix optim.warmup_steps, so that the trunk's warmup is
  the branch's (a warmup_frac would scale with each run's length)."""
  o, steps = config.optim, list(config.get("trunk", {}).get("branch_steps", ()) or ())
  trunk_dir, start = config.get("branch", {}).get("trunk", ""), config.get("branch", {}).get("start_step", 0)
  if steps:
    _require(o.schedule == "constant", "trunk.branch_steps is set, so this run is a WSD trunk: "
             f"optim.schedule must be 'constant', got {o.schedule!r}")
    _require(all(_is_count(s) and 0 < s <= total for s in steps),
             f"trunk.branch_steps must be whole steps in [1, {total}] (the run's steps), got {steps}")
  _require(_is_count(start) and start >= 0, f"branch.start_step must be a whole number >= 0, got {start!r}")
  _require(bool(trunk_dir) or start == 0,
           "branch.start_step is set but branch.trunk is empty; give the trunk's run directory")
  _require(not (steps or trunk_dir) or o.warmup_steps > 0 or o.warmup_frac == 0,
           "a WSD trunk or branch needs optim.warmup_steps > 0 (or warmup_frac=0), the same in trunk and "
           "branches")
  if not trunk_dir:
    return
  _require(not steps, "a run cannot be both a branch (branch.trunk) and a trunk (trunk.branch_steps)")
  _require(o.schedule == "wsd",
           f"branch.trunk is set, so this run is a WSD branch: optim.schedule must be 'wsd', got {o.schedule!r}")
  expected = optim.wsd_decay_start(o, total)
  _require(expected > 0, f"a {total}-step run is too short to branch from a trunk (its decay starts at step 0)")
  _require(start == expected, f"branch.start_step must be this run's WSD decay start, step {expected} of "
           f"{total} (optim.decay_frac={o.decay_frac}), got {start}")
