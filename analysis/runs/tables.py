"""The collected tables on disk (runs.csv, curves.csv and their parquet twins), and a grid manifest
held against what was found."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd

from analysis.runs.collect import CONFIG_COLUMNS, CURVE_COLUMNS, RUN_COLUMNS, Collected, collect
from dlmscale.errors import UserError


def read_any(root: str | pathlib.Path) -> Collected:
  """A report directory's tables (it holds runs.csv) or else every run under a grid workdir."""
  root = pathlib.Path(root)
  return read_tables(root) if (root / "runs.csv").is_file() else collect(root)


def read_tables(root: str | pathlib.Path) -> Collected:
  """runs.csv and curves.csv written by write_tables (a committed report), as collected tables."""
  root = pathlib.Path(root)
  missing = [n for n in ("runs.csv", "curves.csv") if not (root / n).is_file()]
  if missing:
    raise UserError(f"{root} holds no {' or '.join(missing)}; --tables wants a report directory "
                    "written by python -m analysis.report")
  try:
    runs = pd.read_csv(root / "runs.csv")
    curves = pd.read_csv(root / "curves.csv")
  except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
    raise UserError(f"{root}: unreadable table ({e})") from None
  for col in RUN_COLUMNS:
    if col not in runs.columns:
      runs[col] = np.nan
  for col, (_, default) in CONFIG_COLUMNS.items():  # tables from before the column existed
    if default is not None:
      runs[col] = runs[col].where(runs[col].notna(), default)
  for col in CURVE_COLUMNS:
    if col not in curves.columns:
      curves[col] = np.nan
  runs["finished"] = runs["finished"].astype(str).str.lower().isin(["true", "1"])
  runs["run_name"] = runs["run_name"].astype(str)
  curves["run_name"] = curves["run_name"].astype(str)
  return Collected(runs=runs[RUN_COLUMNS], curves=curves[CURVE_COLUMNS],
                   problems=[f"re-analysed from {root}/runs.csv and curves.csv (no run directories)"])


def write_tables(collected: Collected, out: pathlib.Path) -> list[pathlib.Path]:
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, df in (("runs", collected.runs), ("curves", collected.curves)):
    df = df.copy()
    for col in df.columns:  # parquet needs one type per column
      if df[col].dtype == object:
        df[col] = df[col].map(lambda v: None if v is None else str(v))
    df.to_csv(out / f"{name}.csv", index=False)
    df.to_parquet(out / f"{name}.parquet", index=False)
    paths += [out / f"{name}.csv", out / f"{name}.parquet"]
  return paths


def manifest_status(root: pathlib.Path, runs: pd.DataFrame) -> dict | None:
  """Compares DIR/grid_manifest.json (if any) with what was found.

  Accepted shapes: {"runs": [{"run_name"|"name": ..., "state"|"status": ...}, ...]},
  {"runs": {name: state-or-dict}}, or a bare list of names/objects.
  """
  path = pathlib.Path(root) / "grid_manifest.json"
  if not path.is_file():
    return None
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, OSError) as e:
    return dict(error=f"{path} unreadable ({e})")
  entries = data.get("runs", data) if isinstance(data, dict) else data
  expected: dict[str, str] = {}
  if isinstance(entries, dict):
    for name, v in entries.items():
      expected[str(name)] = str(v.get("state", v.get("status", "?")) if isinstance(v, dict) else v)
  elif isinstance(entries, list):
    for v in entries:
      if isinstance(v, dict):
        name = v.get("run_name", v.get("name"))
        if name is not None:
          expected[str(name)] = str(v.get("state", v.get("status", "?")))
      else:
        expected[str(v)] = "?"
  found = {r.run_name: r for r in runs.itertuples()}
  rows = []
  for name, state in sorted(expected.items()):
    r = found.get(name)
    seen = "missing" if r is None else ("finished" if r.finished else "partial")
    rows.append(dict(run_name=name, manifest_state=state, found=seen))
  extra = sorted(set(found) - set(expected))
  return dict(expected=len(expected), rows=rows, not_in_manifest=extra,
              n_finished=sum(r["found"] == "finished" for r in rows),
              n_partial=sum(r["found"] == "partial" for r in rows),
              n_missing=sum(r["found"] == "missing" for r in rows))
