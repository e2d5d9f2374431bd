"""Input checks shared by the fits and the commands: bad data fails with a message naming a fix."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from dlmscale.errors import UserError


def read_csv(path: str | pathlib.Path) -> pd.DataFrame:
  p = pathlib.Path(path)
  if not p.is_file():
    raise UserError(f"CSV file {str(p)!r} does not exist; pass an existing file with --csv=FILE")
  try:
    df = pd.read_csv(p)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read {str(p)!r} as CSV ({e}); pass a comma-separated file with a "
                    "header row") from None
  return df


def require_columns(df: pd.DataFrame, columns: dict[str, str], source: str) -> None:
  """columns maps role -> column name; a missing one is named with the option that sets it."""
  missing = [(role, col) for role, col in columns.items() if col not in df.columns]
  if missing:
    what = ", ".join(f"{col!r} (the {role} column, set with --{role}_col)" for role, col in missing)
    raise UserError(f"{source} has no column {what}; its columns are "
                    f"{', '.join(map(str, df.columns))}")


def numeric_column(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
  values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
  bad = ~np.isfinite(values)
  if bad.any():
    rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:5])
    raise UserError(f"{source}: column {col!r} has {int(bad.sum())} missing or non-numeric "
                    f"value(s) (rows {rows}); remove or fix those rows")
  return values


def check_fit_inputs(*, n_free: int, law: str, **columns) -> tuple[np.ndarray, ...]:
  """Same-length, finite, strictly positive arrays and more points than free parameters."""
  arrays = []
  size = None
  for name, values in columns.items():
    v = np.asarray(values, dtype=np.float64).ravel()
    if size is not None and v.size != size:
      raise UserError(f"{law} fit: {name} has {v.size} values but the others have {size}")
    size = v.size
    if not np.all(np.isfinite(v)):
      raise UserError(f"{law} fit: {name} has non-finite values; drop those points")
    if np.any(v <= 0):
      k = int(np.sum(v <= 0))
      raise UserError(f"{law} fit: {name} must be positive (the fit works on its logarithm) but "
                      f"{k} value(s) are <= 0; drop those points or fix the column")
    arrays.append(v)
  if size is None or size <= n_free:
    raise UserError(f"{law} fit needs more points than its {n_free} free parameters, got "
                    f"{size or 0}; add runs or freeze parameters")
  return tuple(arrays)
