"""Reads every run of a grid into two tables: one row per run, and the long-format curves.

What a run directory holds is dlmscale/run_dir.py's contract. The summary is the primary source;
whatever it lacks is derived from the metric rows (eval rows give the final and best validation loss)
or the config (U, E, seed, sizes). Unfinished runs are kept, flagged finished=False, so a report on a
partial grid can say what is missing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import numpy as np
import pandas as pd

from dlmscale import run_dir as rundir
from dlmscale.errors import UserError
from dlmscale.model import sizes

# Config keys that tell runs of one grid point apart (column <- dotted key, default for runs
# from before the key existed). A report groups and filters by them: label-noise and token-order
# runs are sweeps of their own, tuning-set runs never enter a claim.
CONFIG_COLUMNS = {
    "label_noise": ("data.label_noise", 0.0),
    "num_orders": ("ar.num_orders", 1),
    "eval_set": ("eval.set", "validation"),
    "eval_num_sequences": ("eval.num_sequences", None),
    "lr": ("optim.lr", None),
    "lr_schedule": ("optim.schedule", None),
    "weight_decay": ("optim.weight_decay", None),
    "d_model": ("model.d_model", None),
    "n_layers": ("model.n_layers", None),
}
TUNING_SET = "tune"
# WSD trunks and cooldown branches (configs/grid.py wsd_family), from the config: "trunk" (constant
# rate: its evaluations are the curve), "branch" (its end is the annealed point for its E), "" else.
ROLES = ("", "trunk", "branch")  # config eval.set of learning-rate sweep runs: scored on the tuning documents

RUN_COLUMNS = [
    "run_name", "objective", "model_size", "params_total", "params_non_embedding",
    "unique_tokens", "epochs", "tokens_seen", "flops", "seed", "steps", "finished",
    "final_eval_loss", "final_eval_loss_se", "best_eval_loss", "best_eval_loss_se", "best_step",
    "best_epoch", "best_flops", "best_tokens_seen", "n_eval", "final_eval_step", "n_sequences",
    "eval_documents", "val_unigram_entropy", "last_step", "wall_s",
    "mc_accuracy", "mc_accuracy_se", "mc_nll_gap", "mc_nll_gap_se", *CONFIG_COLUMNS, "role", "annealed",
    "run_dir",
]
CURVE_COLUMNS = [
    "run_name", "objective", "model_size", "unique_tokens", "epochs_planned", "seed",
    "params_non_embedding", "params_total", "step", "split", "loss", "loss_se", "tokens_seen",
    "epoch", "flops", "wall_s", "n_sequences", "eval_documents",
    "mc_accuracy", "mc_accuracy_se", "mc_nll_gap", "mc_nll_gap_se",  # split "mc" rows, if recorded
]


@dataclasses.dataclass
class Collected:
  runs: pd.DataFrame
  curves: pd.DataFrame
  problems: list[str]  # unreadable files, malformed lines: reported, never fatal


def find_run_dirs(root: pathlib.Path) -> list[pathlib.Path]:
  """Directories under root holding any run file; a run's own subfolders are not searched."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    if any(f in filenames for f in rundir.RUN_FILES):
      found.append(pathlib.Path(dirpath))
      dirnames[:] = []
      continue
    dirnames[:] = sorted(d for d in dirnames if d not in rundir.NOT_RUN_DIRS and not d.startswith("."))
  return sorted(found)


def _read_record(path: pathlib.Path, problems: list[str]) -> dict:
  if not path.is_file():
    return {}
  try:
    return rundir.read_record(path)
  except rundir.RecordError as e:
    problems.append(f"{e}; ignored")
    return {}


NUMERIC = ("step", "loss", "loss_se", "tokens_seen", "epoch", "flops", "wall_s", "mc_accuracy",
           "mc_accuracy_se", "mc_nll_gap", "mc_nll_gap_se")


def read_metrics(run_dir: pathlib.Path, problems: list[str]) -> pd.DataFrame:
  """The run's metric rows; a malformed line (say, half-written by a live run) is skipped and noted."""
  path = rundir.metrics_path(run_dir)
  rows, bad = rundir.read_rows_checked(path)
  problems += [f"{path}:{lineno}: malformed line skipped" for lineno in bad]
  df = pd.DataFrame(rows)
  for col in NUMERIC:
    df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
  if "split" not in df.columns:
    df["split"] = "eval" if "loss_se" in df.columns else "train"
  return df


def _num(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def _first(*values):
  """The first value that is present (not None, not NaN)."""
  for v in values:
    if v is None:
      continue
    if isinstance(v, float) and math.isnan(v):
      continue
    return v
  return None


def read_run(run_dir: pathlib.Path, problems: list[str]) -> tuple[dict, pd.DataFrame]:
  config = _read_record(rundir.config_path(run_dir), problems)
  summary = _read_record(rundir.summary_path(run_dir), problems)
  eval_json = _read_record(rundir.eval_path(run_dir), problems)
  metrics = read_metrics(run_dir, problems)
  row = _run_row(run_dir, config, summary, eval_json, metrics)
  return row, _curve(metrics, row)


def _run_row(run_dir: pathlib.Path, config: dict, summary: dict, eval_json: dict,
             metrics: pd.DataFrame) -> dict:
  """The run's row of the runs table: the summary's value where it has one, else the metrics' or the
  config's."""
  flat = rundir.flatten(config)
  evals = metrics[metrics["split"] == "eval"].dropna(subset=["loss"]).sort_values("step")
  last = metrics.sort_values("step").iloc[-1] if len(metrics) else None
  final = evals.iloc[-1] if len(evals) else None
  best = evals.loc[evals["loss"].idxmin()] if len(evals) else None

  def from_row(row, col):
    return None if row is None else _num(row.get(col))

  # A run started by hand has run_name "": it is named by its directory, like one without a name.
  name = _first(summary.get("run_name") or None, config.get("run_name") or None, run_dir.name)
  row = dict(
      run_name=str(name),
      objective=_first(summary.get("objective"), config.get("objective")),
      model_size=_first(summary.get("model_size"), config.get("model_size")),
      params_total=_num(_first(summary.get("params_total"))),
      params_non_embedding=_num(_first(summary.get("params_non_embedding"))),
      unique_tokens=_num(_first(summary.get("unique_tokens"), config.get("unique_tokens"))),
      epochs=_num(_first(summary.get("epochs"), config.get("epochs"))),
      tokens_seen=_num(_first(summary.get("tokens_seen"), from_row(last, "tokens_seen"))),
      flops=_num(_first(summary.get("flops"), from_row(last, "flops"))),
      seed=_first(summary.get("seed"), config.get("seed")),
      steps=_num(_first(summary.get("steps"), from_row(last, "step"))),
      finished=bool(summary),
      final_eval_loss=_num(_first(summary.get("final_eval_loss"), from_row(final, "loss"))),
      final_eval_loss_se=_num(_first(summary.get("final_eval_loss_se"),
                                     from_row(final, "loss_se"))),
      best_eval_loss=_num(_first(summary.get("best_eval_loss"), from_row(best, "loss"))),
      best_eval_loss_se=_num(_first(summary.get("best_eval_loss_se"), from_row(best, "loss_se"))),
      best_step=_num(_first(summary.get("best_step"), from_row(best, "step"))),
      best_epoch=_num(_first(summary.get("best_epoch"), from_row(best, "epoch"))),
      best_flops=from_row(best, "flops"),
      best_tokens_seen=from_row(best, "tokens_seen"),
      n_eval=int(len(evals)),
      final_eval_step=from_row(final, "step"),
      n_sequences=_num(_first(summary.get("n_sequences"), from_row(final, "n_sequences"))),
      eval_documents=_num(_first(summary.get("eval_documents"), from_row(final, "eval_documents"))),
      val_unigram_entropy=_num(summary.get("val_unigram_entropy")),  # absent in older runs
      last_step=from_row(last, "step"),
      wall_s=_num(_first(summary.get("wall_s"), from_row(last, "wall_s"))),
      mc_accuracy=_num(_first(eval_json.get("mc_accuracy"), summary.get("mc_accuracy"))),
      mc_accuracy_se=_num(eval_json.get("mc_accuracy_se")),
      mc_nll_gap=_num(eval_json.get("mc_nll_gap")),
      mc_nll_gap_se=_num(eval_json.get("mc_nll_gap_se")),
      **{col: flat.get(key, default) for col, (key, default) in CONFIG_COLUMNS.items()},
      role=role(flat), annealed=annealed(flat), run_dir=str(run_dir),
  )
  if row["model_size"] == "custom" and row["d_model"]:  # width sweeps: one point per shape
    row["model_size"] = f"custom-d{int(row['d_model'])}L{int(row['n_layers'] or 0)}"
  elif row["model_size"] in sizes.LADDER:  # a ladder size leaves model.* at 0; its shape is the ladder's
    shape = sizes.LADDER[row["model_size"]]
    row["d_model"], row["n_layers"] = shape.d_model, shape.n_layers
  return row


def role(flat_config: dict) -> str:
  """A run's part in a WSD grid, from its flattened config (ROLES)."""
  if flat_config.get("branch.trunk"):
    return "branch"
  return "trunk" if flat_config.get("trunk.branch_steps") else ""


def annealed(flat_config: dict) -> bool:
  """Whether the run's end is an annealed point: its schedule decays to its end (cosine, or WSD:
  a cooldown branch), unlike a constant-rate run such as a WSD trunk, whose evaluations are read
  at the peak rate."""
  return flat_config.get("optim.schedule", "cosine") in ("cosine", "wsd")


def _curve(metrics: pd.DataFrame, row: dict) -> pd.DataFrame:
  """The run's metric rows in the long curves table, labelled with the run's identity."""
  curve = metrics.copy()
  for key, col in (("run_name", "run_name"), ("objective", "objective"),
                   ("model_size", "model_size"), ("unique_tokens", "unique_tokens"),
                   ("epochs", "epochs_planned"), ("seed", "seed"),
                   ("params_non_embedding", "params_non_embedding"),
                   ("params_total", "params_total")):
    curve[col] = row[key]
  for col in CURVE_COLUMNS:
    if col not in curve.columns:
      curve[col] = np.nan
  return curve[CURVE_COLUMNS]


def collect(root: str | pathlib.Path) -> Collected:
  root = pathlib.Path(root)
  if not root.is_dir():
    raise UserError(f"runs directory {str(root)!r} does not exist; pass the grid's workdir with "
                    "--runs=DIR")
  problems: list[str] = []
  rows, curves = [], []
  for run_dir in find_run_dirs(root):
    row, curve = read_run(run_dir, problems)
    rows.append(row)
    curves.append(curve)
  names = pd.Series([r["run_name"] for r in rows], dtype=object)
  for d in names[names.duplicated()].unique():
    problems.append(f"run name {d!r} appears in several directories; names made unique by path")
  for row, curve in zip(rows, curves):  # one name per run, the same in both tables (they join on it)
    if (names == row["run_name"]).sum() > 1:
      row["run_name"] = f"{row['run_name']}@{pathlib.Path(row['run_dir']).relative_to(root)}"
    curve["run_name"] = row["run_name"]
  runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
  curve_df = (pd.concat(curves, ignore_index=True) if curves else
              pd.DataFrame(columns=CURVE_COLUMNS))
  return Collected(runs=runs, curves=curve_df, problems=problems)


def combine(main: Collected, others: dict[str, Collected]) -> Collected:
  """main's runs plus those of other grids (e.g. the learning-rate sweep a study's recipe came
  from): one table, so one runs.csv holds the study and its sweep. A run name found twice would
  join the wrong curves, so it is an error."""
  runs, curves, problems = [main.runs], [main.curves], list(main.problems)
  seen = set(main.runs["run_name"])
  for where, c in others.items():
    twice = sorted(seen & set(c.runs["run_name"]))
    if twice:
      raise UserError(f"{where} holds runs already analysed ({', '.join(twice[:3])}"
                      f"{', ...' if len(twice) > 3 else ''}); pass each grid once")
    seen |= set(c.runs["run_name"])
    runs.append(c.runs)
    curves.append(c.curves)
    problems += [f"{where}: {p}" for p in c.problems]
  return Collected(runs=pd.concat(runs, ignore_index=True),
                   curves=pd.concat(curves, ignore_index=True), problems=problems)


def require_finished(collected: Collected, root) -> pd.DataFrame:
  runs = collected.runs
  finished = runs["finished"].astype(bool) & np.isfinite(pd.to_numeric(runs["final_eval_loss"],
                                                                       errors="coerce"))
  done = runs[finished]
  if done.empty:
    n = len(collected.runs)
    raise UserError(
        f"no finished run under {str(root)!r} ({n} run director{'y' if n == 1 else 'ies'} found, "
        f"none with {rundir.SUMMARY} and an eval loss); wait for runs to finish or point --runs at the "
        "grid's workdir")
  return done
