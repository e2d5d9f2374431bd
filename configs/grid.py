"""What every grid config shares: the `key=value` argument, scale presets, run names, overrides.

A grid point is a flat dict of config overrides ({"objective": "mdm", "optim.lr": 1.7e-3, ...}) with
a readable `run_name`. The same dict becomes `--config.KEY=VALUE` flags for the trainer, so a
point means the same thing whether a launcher or a person types the command.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

import ml_collections

from configs import base
from dlmscale.model import sizes
from dlmscale.units import human  # grid files use it as grid.human
from dlmscale.data import pipeline
from dlmscale.errors import UserError

LIST_SEP = "+"  # `sizes=s1M+s3M`: commas already separate the key=value pairs

# Peak learning rate by size: smaller models take larger steps. Roughly 3e-3 * (N / 1e5)^-0.25, so
# 3e-3 at 0.1M and 3e-4 at 1B non-embedding parameters, rounded. Every grid sets optim.lr from here.
LR_BY_SIZE: dict[str, float] = {
    "s0.1M": 3e-3, "s0.2M": 2.5e-3, "s0.4M": 2e-3, "s1M": 1.7e-3, "s3M": 1.3e-3, "s10M": 1e-3, "s25M": 8e-4,
    "s50M": 6e-4, "s100M": 5e-4, "s250M": 4e-4, "s500M": 3.5e-4, "s1B": 3e-4,
}

# Training settings per scale; the grid axes (sizes, U, E) live in each grid file.
SCALES: dict[str, dict[str, Any]] = {
    "test": {  # seconds per run on a CPU: for tests of the machinery only
        "data.seq_len": 64, "data.vocab_size": 512, "batch_size": 8,
        "eval.num_sequences": 16, "eval.batch_size": 16, "eval.mc_samples": 2,
        "checkpoint.every_steps": 20, "log_every_steps": 5, "tensorboard": False,
    },
    "cpu": {  # a laptop: minutes per run, a few hours per grid
        "data.seq_len": 128, "data.vocab_size": 2048, "batch_size": 32,
        "eval.num_sequences": 128, "eval.batch_size": 64, "eval.mc_samples": 4,
        "checkpoint.every_steps": 250, "log_every_steps": 20,
    },
    "cluster": {  # accelerators: Prabhudesai et al. 2025 scale
        "data.seq_len": 2048, "data.vocab_size": 50304, "batch_size": 256,
        "eval.num_sequences": 1024, "eval.batch_size": 128, "eval.mc_samples": 8,
        "checkpoint.every_steps": 1000, "log_every_steps": 50,
        "model.dtype": "bfloat16",
        # For 16 GB v5e chips (python -m launch.aot, docs/launching.md): replicated, s1B's f32
        # state with Adam (~13 GB) fills a chip, so parameters and optimizer state are sharded
        # over every chip (FSDP); without remat, s10M at 16 sequences per chip (data-parallel) needs
        # 16.7 GiB of temporaries (the compiler's figure) against 15.75 GiB usable, so blocks are
        # recomputed in the backward pass (same math, ~1/3 more FLOPs). `--set` undoes either.
        "mesh.data": 1, "mesh.fsdp": -1, "model.remat": "full",
        # Splash attention on TPU (never the [L, L] scores) and the loss over 512 positions at a time
        # (never the full float32 [B, L, V] logits): with them s500M fits v5e-16 (docs/launching.md).
        "model.attention": "auto", "model.loss_chunk": 512,
    },
}
EVALS_PER_RUN = {"test": 2, "cpu": 10, "cluster": 20}


def parse_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
  """`scale=cpu,seed=1,sizes=s1M+s3M` -> a dict typed like `defaults` (lists split on '+')."""
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in defaults:
      hint = f" (did you mean {key + 's'!r}?)" if key + "s" in defaults else ""
      raise UserError(f"bad config argument {item!r}{hint}: expected key=value with key one of "
                      f"{', '.join(defaults)} (e.g. 'scale=cpu,seeds=0+1')")
    out[key] = _typed(key, value.strip(), defaults[key])
  if "scale" in out and out["scale"] not in SCALES:
    raise UserError(f"unknown scale {out['scale']!r}; choose one of {', '.join(SCALES)}")
  return out


def scale_of(arg: str | None, default: str = "cpu") -> str:
  """The `scale=` entry alone, so a grid can pick its axis defaults before the full parse."""
  for item in (arg or "").split(","):
    key, _, value = item.partition("=")
    if key.strip() == "scale":
      default = value.strip()
  if default not in SCALES:
    raise UserError(f"unknown scale {default!r}; choose one of {', '.join(SCALES)}")
  return default


def check_sizes(names: list[str]) -> None:
  for name in names:
    if name not in LR_BY_SIZE:
      raise UserError(f"unknown model size {name!r} in the grid; choose from {', '.join(LR_BY_SIZE)}")


def _typed(key: str, text: str, default: Any) -> Any:
  try:
    if isinstance(default, (list, tuple)):
      kind = type(default[0]) if default else str
      return [_scalar(kind, t) for t in text.split(LIST_SEP) if t]
    return _scalar(type(default), text)
  except ValueError:
    raise UserError(f"config argument {key}={text!r} does not parse like its default {default!r}") from None


def parse_bool(text: str) -> bool:
  """true/false, 1/0, yes/no (any case); anything else is a ValueError, never a silent False."""
  value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
  if value is None:
    raise ValueError(f"not a boolean: {text!r}")
  return value


def _scalar(kind: type, text: str) -> Any:
  if kind is bool:
    return parse_bool(text)
  if kind is int:
    return int(float(parse_count(text)))
  if kind is float:
    return float(parse_count(text))
  return text


def parse_count(text: str) -> float:
  """'250k' -> 250000.0, '33.3B' -> 33300000000.0 (exactly), '3e12' -> 3e12."""
  mult = {"k": 3, "K": 3, "M": 6, "B": 9, "G": 9, "T": 12}.get(text[-1:], 0)
  try:
    return float(decimal.Decimal(text[:-1] if mult else text).scaleb(mult))
  except decimal.InvalidOperation:
    raise ValueError(f"not a count: {text!r}") from None


def round_sig(x: float, digits: int = 3) -> int:
  """Rounds a token count so that its human name states it exactly."""
  if x <= 0:
    return 0
  scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
  return int(round(x / scale) * scale)


def run_name(objective: str, size: str, unique_tokens: int, epochs: float, seed: int) -> str:
  return f"{objective}-{size}-u{human(unique_tokens)}-e{human(epochs)}-seed{seed}"


def steps_for(unique_tokens: int, epochs: float, batch_size: int, seq_len: int) -> int:
  """The trainer's step count (pipeline.exact_steps: exact, not float, arithmetic), at least 1."""
  return max(1, pipeline.exact_steps(unique_tokens, epochs, batch_size, seq_len))


def eval_every(unique_tokens: int, epochs: float, batch_size: int, seq_len: int, evals: int) -> int:
  """An eval cadence giving about `evals` evaluations over the run."""
  return max(1, steps_for(unique_tokens, epochs, batch_size, seq_len) // evals)


def scale_config(scale: str) -> ml_collections.ConfigDict:
  """base.get_config() with the scale's training settings applied."""
  return apply_overrides(base.get_config(), SCALES[scale])


def point(objective: str, size: str, unique_tokens: int, epochs: float, seed: int, scale: str,
          **extra: Any) -> dict[str, Any]:
  """One grid point's overrides: the axes, the size's lr, and an eval cadence of ~N evals per run
  (unless `extra` sets eval.every_steps itself)."""
  s = SCALES[scale]
  out = {
      "objective": objective, "model_size": size, "unique_tokens": int(unique_tokens),
      "epochs": float(epochs), "seed": int(seed), "optim.lr": LR_BY_SIZE[size],
      "eval.every_steps": extra.get("eval.every_steps") or eval_every(
          unique_tokens, epochs, s["batch_size"], s["data.seq_len"], EVALS_PER_RUN[scale]),
      "run_name": run_name(objective, size, unique_tokens, epochs, seed),
  }
  out.update(extra)
  return out


def dedupe(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Drops repeats of a point (same name, same overrides), keeping grid order; a clash is a bug."""
  seen: dict[str, dict[str, Any]] = {}
  for p in points:
    prev = seen.setdefault(p["run_name"], p)
    if prev != p:
      raise UserError(f"two different grid points share the run name {p['run_name']!r}: {prev} vs {p}")
  return list(seen.values())


def _walk(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise UserError(f"override {key!r}: {p!r} is not a config section (see configs/base.py)")
    node = node[p]
  if leaf not in node:
    raise UserError(f"override {key!r}: no such config key (see configs/base.py)")
  return node, leaf


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys on a copy; a missing key or a type clash is a UserError, never a new field."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node, leaf = _walk(config, key)
    try:
      node[leaf] = value
    except TypeError as e:
      raise UserError(f"override {key}={value!r}: {e}") from None
  return config


def coerce_like(key: str, text: str, config: ml_collections.ConfigDict) -> Any:
  """Parses a `--set KEY=VALUE` value with the type of the existing field."""
  node, leaf = _walk(config, key)
  current = node[leaf]
  try:
    if isinstance(current, bool):
      return parse_bool(text)
    if isinstance(current, (int, float)):
      return type(current)(text)
  except ValueError:
    raise UserError(f"--set {key}={text}: expected a {type(current).__name__}") from None
  return text


# --- WSD trunks and cooldown branches -------------------------------------------------------------


def epochs_for_steps(unique_tokens: int, steps: int, batch_size: int, seq_len: int) -> float:
  """The epochs (a float) whose budget is exactly `steps` steps, for a run that ends at a step."""
  e = steps * batch_size * seq_len / unique_tokens
  for _ in range(8):
    if pipeline.exact_steps(unique_tokens, e, batch_size, seq_len) >= steps:
      return e
    e = math.nextafter(e, math.inf)
  raise UserError(f"no epoch count gives exactly {steps} steps at U={unique_tokens}")


def wsd_family(objective: str, size: str, unique_tokens: int, epochs: list[float], seed: int,
               scale: str, *, decay_frac: float = 0.2, warmup_steps: int = 0, batch_size: int = 0,
               seq_len: int = 0, **extra: Any) -> list[dict[str, Any]]:
  """One WSD trunk and one cooldown branch per epoch count for (objective, size, U, seed).

  The trunk trains at the constant peak rate up to the last branch start and keeps a checkpoint at
  each; the branch for E (named as a solo run of E epochs) starts from the trunk's checkpoint at its
  decay start and cools down over `decay_frac` of its own steps: it is the standalone WSD run of E
  epochs. Every point fixes optim.warmup_steps (default 5% of the shortest branch), so the trunk's
  warmup is each branch's. `batch_size`/`seq_len`: the grid's, when it overrides the scale's.
  """
  from dlmscale.train import optim  # pylint: disable=g-import-not-at-top  (jax: only for these grids)
  s = SCALES[scale]
  b, l = batch_size or s["batch_size"], seq_len or s["data.seq_len"]
  lengths = {float(e): steps_for(unique_tokens, e, b, l) for e in sorted(set(epochs))}
  warm = warmup_steps or max(1, round(0.05 * min(lengths.values())))
  o = ml_collections.ConfigDict({"warmup_steps": warm, "warmup_frac": 0.0, "decay_frac": decay_frac})
  starts = {e: optim.wsd_decay_start(o, n) for e, n in lengths.items()}
  if min(starts.values()) <= 0:
    raise UserError(f"{objective}-{size} at U={unique_tokens}: a branch of {min(lengths.values())} steps is "
                    "too short to start from a trunk; raise the epochs or U")
  trunk_name = f"{objective}-{size}-u{human(unique_tokens)}-trunk-seed{seed}"
  shared = {**extra, "optim.warmup_steps": warm, "optim.decay_frac": float(decay_frac)}
  last = max(starts.values())
  trunk = point(objective, size, unique_tokens, epochs_for_steps(unique_tokens, last, b, l), seed, scale,
                **{**shared, "optim.schedule": "constant", "trunk.branch_steps": tuple(sorted(set(starts.values()))),
                   "branch.trunk": "", "branch.start_step": 0, "run_name": trunk_name})
  # Each point sets every trunk/branch key: a grid's base config is its first point's.
  branches = [point(objective, size, unique_tokens, e, seed, scale,
                    **{**shared, "optim.schedule": "wsd", "trunk.branch_steps": (), "branch.trunk": trunk_name,
                       "branch.start_step": starts[e]}) for e in lengths]
  return [trunk, *branches]
