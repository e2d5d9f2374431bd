"""The run directory: config.json, metrics.jsonl, summary.json and a lock, as DESIGN.md specifies.

A workdir belongs to one configuration. Re-running with the same config resumes; a different one is
refused, so a typo on the command line can never mix two experiments in one metrics file.
Operational keys (logging, checkpoint cadence, mesh, cache paths) may change between resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
from typing import Any, Iterable

import ml_collections

from dlmscale.errors import UserError

OPERATIONAL_KEYS = frozenset({
    "log_every_steps", "tensorboard", "checkpoint.every_steps", "checkpoint.keep",
    "data.cache_dir", "data.num_workers", "mesh.data", "mesh.fsdp", "eval.batch_size",
    "model.remat", "model.attention",
})


# Keys added after runs already existed, with the value those older runs implicitly used.
LEGACY_DEFAULTS: dict[str, Any] = {"eval.mdm_estimator": "time",
                                   "ar.num_orders": 1, "ar.target_position": True,
                                   "data.label_noise": 0.0,
                                   "eval.mdm_positions": "all"}


def with_legacy_defaults(config: dict) -> dict:
  """A stored config.json from before a key existed, completed with what that run actually did."""
  out = json.loads(json.dumps(config))
  for key, value in LEGACY_DEFAULTS.items():
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node.setdefault(leaf, value)
  return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_differences(old: dict, new: dict) -> list[str]:
  a, b = flatten(old), flatten(new)
  keys = sorted((set(a) | set(b)) - OPERATIONAL_KEYS)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys if a.get(k) != b.get(k)]


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
  os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
  if hasattr(x, "item"):
    return x.item()
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def claim_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
  """Writes config.json, or checks it against the stored one. Returns True when resuming."""
  path = workdir / "config.json"
  new = json.loads(config.to_json_best_effort())
  if not path.exists():
    write_json_atomic(path, new)
    return False
  diffs = config_differences(with_legacy_defaults(json.loads(path.read_text())), new)
  if diffs:
    raise UserError(
        f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs)
        + f"\nUse a new --workdir for this config, or delete {workdir} to start it fresh.")
  write_json_atomic(path, new)  # operational keys may have changed
  return True


class WorkdirLock:
  """Holds an exclusive lock on the run so two trainers never write the same directory."""

  def __init__(self, workdir: pathlib.Path):
    self._f = open(workdir / ".lock", "w")
    try:
      fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._f.close()
      raise UserError(f"another process is training in {workdir}; wait for it or use another --workdir")

  def release(self) -> None:
    fcntl.flock(self._f, fcntl.LOCK_UN)
    self._f.close()


class MetricsLog:
  """metrics.jsonl, one JSON object per line; on resume, rows past the checkpoint are dropped."""

  def __init__(self, path: pathlib.Path, resume_step: int):
    self.path = path
    if path.exists():
      rows = [r for r in read_rows(path) if r["step"] <= resume_step]
      tmp = path.with_name(path.name + ".tmp")
      tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
      os.replace(tmp, path)
    self._f = open(path, "a")

  def write(self, row: dict[str, Any]) -> None:
    self._f.write(json.dumps(row, default=_jsonable) + "\n")
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  """Rows of a metrics.jsonl; a torn last line (a kill mid-write) is skipped."""
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def best_eval(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  evals = [r for r in rows if r.get("split") == "eval"]
  return min(evals, key=lambda r: r["loss"]) if evals else None
