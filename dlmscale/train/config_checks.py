"""A run's config checked once, where it enters (the trainer, the AOT compiler), before anything runs.

Library functions below this point trust the config and raise only about their own arguments.
"""

from __future__ import annotations

import math

import ml_collections

from dlmscale import objectives
from dlmscale.objectives import masking
from dlmscale.objectives import orders
from dlmscale.data import evalset, label_noise, pipeline
from dlmscale.errors import UserError
from dlmscale.train import profiler, tracking


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
  pipeline.steps_for_budget(config.unique_tokens, config.epochs, config.batch_size, config.data.seq_len)
