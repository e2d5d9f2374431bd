"""The run directory contract: every file a run writes, and the one reader and writer of each record.

    RUN/config.json       the run's identity (config + the prepared data's hashes); written once,
                          checked on every resume
    RUN/metrics.jsonl     one JSON row per logged step (split train | eval | mc); append-only
    RUN/summary.json      written last: the run is finished iff it exists
    RUN/eval.json         what `python -m dlmscale.evaluate` measured on the newest checkpoint
    RUN/eval_losses/      per-sequence validation losses, one step_XXXXXXXX.npz per evaluation
    RUN/task_scores/      per-item task scores, one step_XXXXXXXX.npz per metrics row of split mc
    RUN/lm_eval.json      what `python -m dlmscale.lm_eval` measured (lm-eval's results)
    RUN/checkpoints/      orbax checkpoints (state + data iterator)
    RUN/tb/               TensorBoard scalars
    RUN/wandb/            wandb's own folder (wandb.init(dir=RUN)): offline runs wait here for a sync
    RUN/profile/          the jax.profiler trace of config.profile_steps
    RUN/params.txt        the parameter overview
    RUN/checkpoint_errors.log   why a checkpoint could not be read (orbax's traceback)
    RUN/launch.log        a launcher's record of each attempt at the run (launch/)
    RUN/.lock             flock()ed while a trainer writes the directory

Every other module names these through the functions below, so the layout changes in one place.
A workdir belongs to one configuration. Re-running with the same config resumes; a different one is
refused, so a typo on the command line can never mix two experiments in one metrics file.
Operational keys (logging, checkpoint cadence, mesh, cache paths) may change between resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import time
from typing import Any, Callable, Iterable

import ml_collections

from dlmscale.errors import UserError

CONFIG, METRICS, SUMMARY, EVAL = "config.json", "metrics.jsonl", "summary.json", "eval.json"
LOSSES, CHECKPOINTS, TENSORBOARD, LOCK = "eval_losses", "checkpoints", "tb", ".lock"
PARAMS, CHECKPOINT_ERRORS, LAUNCH_LOG = "params.txt", "checkpoint_errors.log", "launch.log"
LM_EVAL, WANDB, PROFILE, TASK_SCORES = "lm_eval.json", "wandb", "profile", "task_scores"
RUN_FILES = (CONFIG, METRICS, SUMMARY)
NOT_RUN_DIRS = frozenset({LOSSES, CHECKPOINTS, TENSORBOARD, WANDB, PROFILE, TASK_SCORES, "__pycache__"})  # inside a run, never runs


PathOf = Callable[[str | os.PathLike], pathlib.Path]


def _in_run(name: str) -> PathOf:
  return lambda workdir: pathlib.Path(workdir) / name


# RUN/<file> for each record: every other module names a run's files through these.
config_path, metrics_path, summary_path, eval_path = map(_in_run, (CONFIG, METRICS, SUMMARY, EVAL))
checkpoints_dir, tensorboard_dir, launch_log = map(_in_run, (CHECKPOINTS, TENSORBOARD, LAUNCH_LOG))
profile_dir, lm_eval_path = map(_in_run, (PROFILE, LM_EVAL))


def losses_path(workdir: str | os.PathLike, step: int, split: str = "eval") -> pathlib.Path:
  """The companion file of the metrics row (`split` eval: per-sequence losses; mc: per-item scores)."""
  return pathlib.Path(workdir) / {"eval": LOSSES, "mc": TASK_SCORES}[split] / f"step_{int(step):08d}.npz"


def is_finished(workdir: str | os.PathLike) -> bool:
  return summary_path(workdir).exists()


class RecordError(ValueError):
  """A record of the run directory that cannot be read as what it is (not JSON, not an object)."""


def read_record(path: str | os.PathLike) -> dict:
  """A JSON-object record (config, summary, eval); RecordError names the file and what is wrong."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
    raise RecordError(f"{path} is not valid JSON ({e})") from None
  if not isinstance(data, dict):
    raise RecordError(f"{path}: expected a JSON object")
  return data


def read_summary(workdir: str | os.PathLike) -> dict | None:
  """The finished run's summary; None while it runs."""
  path = summary_path(workdir)
  return read_record(path) if path.exists() else None


def write_summary(workdir: str | os.PathLike, summary: dict[str, Any]) -> pathlib.Path:
  path = summary_path(workdir)
  write_json_atomic(path, summary)
  return path


OPERATIONAL_KEYS = frozenset({
    "log_every_steps", "tensorboard", "checkpoint.every_steps", "checkpoint.keep",
    "data.cache_dir", "data.num_workers", "mesh.data", "mesh.fsdp", "eval.batch_size",
    "model.remat", "model.attention", "eval.task_every",
    "wandb.project", "wandb.entity", "wandb.mode", "wandb.name", "profile_steps",
})


# Keys added after runs already existed, with the value those older runs implicitly used.
LEGACY_DEFAULTS: dict[str, Any] = {"eval.mdm_estimator": "time", "ar.num_orders": 1, "ar.target_position": True,
                                   "data.label_noise": 0.0, "eval.mdm_positions": "all", "eval.set": "val",
                                   "micro_batch_size": 0, "model.loss_chunk": 0,
                                   "wandb.project": "", "wandb.entity": "", "wandb.mode": "online",
                                   "wandb.name": "", "profile_steps": "",
                                   "eval.schedule": "fixed", "eval.log_points": 16,
                                   "trunk.branch_steps": [], "branch.trunk": "", "branch.start_step": 0}


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


def write_text_atomic(path: pathlib.Path, text: str) -> None:
  """Replaces path in one rename: a stop or a kill never leaves half a file."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
  if hasattr(x, "item"):
    return x.item()
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


DATA_KEY = "data_sha256"  # config.json's record of the prepared data the run trains on
REPLACED_KEY = "data_sha256_replaced"  # earlier records, kept when a resume moved to new data


def check_not_url(workdir: str | pathlib.Path, flag: str = "--workdir") -> None:
  """Refuses an object-store URL (gs://, s3://) at once, naming a mounted path as the way to a bucket."""
  if m := re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)", str(workdir)):
    b = m.group(2) or "BUCKET"
    raise UserError(f"{flag}={workdir} is an object-store URL; checkpoints, metrics and locks need a file "
                    f"system: mount the bucket (gcsfuse {b} /mnt/{b}, or mount-s3 {b} /mnt/{b}) and pass "
                    f"{flag}=/mnt/{b}/...")


def check_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
  """The workdir as a path, if it is (or can be created as) a writable directory (no object-store
  URL, check_not_url); creates nothing."""
  check_not_url(workdir)
  path = pathlib.Path(workdir).expanduser()
  if path.exists() and not path.is_dir():
    raise UserError(f"--workdir {path} is a file, not a directory; give a directory (it is created "
                    "if missing)")
  existing = path
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    raise UserError(f"--workdir {path} cannot be created: {existing} is a file; give a directory path")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f"--workdir {path}: {existing} is not writable by this user; choose a directory "
                    "you can write to (or fix its permissions)")
  return path


def crash_file(workdir: str | pathlib.Path) -> pathlib.Path:  # one internal error's traceback
  return pathlib.Path(workdir) / f"crash-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.txt"


def data_differences(old: dict, new: dict) -> list[str]:
  """The parts of the prepared data (train chunks, val chunks, tokenizer) whose content changed."""
  return [f"{k} sha256 {str(old[k])[:12]}... -> {str(new.get(k))[:12]}..."
          for k in sorted(old) if k in new and old[k] != new[k]]


def stored_config(workdir: pathlib.Path) -> dict | None:
  path = config_path(workdir)
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}); it holds the run's identity, so restore it or "
                    "use a new --workdir") from None


def claim_config(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                 data_sha256: dict[str, str] | None = None, allow_new_data: bool = False) -> bool:
  """Writes config.json, or checks it against the stored one. Returns True when resuming.

  `data_sha256` (content hashes of the prepared data) is recorded with the config; a resume on data
  with other hashes is refused unless `allow_new_data`, which keeps the old record as well.
  Everything is checked before anything is written.
  """
  path = config_path(workdir)
  new = json.loads(config.to_json_best_effort())
  old = stored_config(workdir)
  if old is None:
    write_json_atomic(path, {**new, DATA_KEY: data_sha256} if data_sha256 else new)
    return False
  old_data, replaced = old.pop(DATA_KEY, None), old.pop(REPLACED_KEY, [])
  diffs = config_differences(with_legacy_defaults(old), new)
  if diffs:
    raise UserError(
        f"{workdir} holds a run with a different config:\n  " + "\n  ".join(diffs)
        + f"\nUse a new --workdir for this config, or delete {workdir} to start it fresh.")
  data_diffs = data_differences(old_data or {}, data_sha256 or {})
  if data_diffs and not allow_new_data:
    raise UserError(
        f"{workdir} was trained on other data than is prepared now ({'; '.join(data_diffs)}): the "
        "corpus or data.* settings changed. Restore the original data, or pass --allow_new_data to "
        "continue this run on the new data (recorded in config.json)")
  if data_diffs:
    replaced = [*replaced, old_data]
  record = data_sha256 or old_data
  write_json_atomic(path, {**new, **({DATA_KEY: record} if record else {}),
                           **({REPLACED_KEY: replaced} if replaced else {})})
  return True


def config_without_records(stored: dict) -> dict:
  """A stored config.json without the data records: just the config."""
  return {k: v for k, v in stored.items() if k not in (DATA_KEY, REPLACED_KEY)}


class WorkdirLock:
  """Holds an exclusive lock on the run so two trainers never write the same directory."""

  def __init__(self, workdir: pathlib.Path):
    self._f = open(pathlib.Path(workdir) / LOCK, "w")
    try:
      fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._f.close()
      raise UserError(f"another process is training in {workdir}; wait for it or use another --workdir")

  def release(self) -> None:
    fcntl.flock(self._f, fcntl.LOCK_UN)
    self._f.close()


class MetricsLog:
  """metrics.jsonl, append-only while training; on resume, rows past the checkpoint are dropped.

  Rows that cannot be read (torn, binary, without an integer `step`) are dropped too, and so are
  any past `resume_step`; `self.dropped` counts the unreadable ones and `self.last_step` is the
  last step still recorded, so the trainer can say what was lost.
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: int):
    self.path = path = metrics_path(workdir)
    self.dropped, self.last_step = 0, None
    if path.exists():
      rows, bad = read_rows_checked(path)
      self.dropped = len(bad)
      kept = [r for r in rows if r["step"] <= resume_step]
      self.last_step = max((r["step"] for r in kept), default=None)
      if len(kept) != len(rows) or self.dropped:
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._f = open(path, "a")

  def write(self, row: dict[str, Any]) -> None:
    if not self.path.exists():  # deleted while the run was live: start it again, said once
      print(f"warning: {self.path} was deleted during the run; writing it again from step "
            f"{row.get('step')}", flush=True)
      self._f.close()
      self._f = open(self.path, "a")
    self._f.write(json.dumps(row, default=_jsonable) + "\n")
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def _row(line: str) -> dict[str, Any] | None:
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return None
  if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
    return None
  return row


def read_rows_checked(path: pathlib.Path) -> tuple[list[dict[str, Any]], list[int]]:
  """(readable rows, 1-based numbers of the non-empty lines that are not): bytes that are not UTF-8
  JSON objects with an integer `step` (a torn last line, a damaged file) are skipped, never fatal."""
  rows, bad = [], []
  if not path.exists():
    return rows, bad
  for lineno, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    row = _row(line)
    if row is None:
      bad.append(lineno)
    else:
      rows.append(row)
  return rows, bad


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The run's metric rows; a torn last line (a kill mid-write) or a damaged row is skipped."""
  return read_rows_checked(metrics_path(workdir))[0]


def best_eval(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  evals = [r for r in rows if r.get("split") == "eval"]
  return min(evals, key=lambda r: r["loss"]) if evals else None
