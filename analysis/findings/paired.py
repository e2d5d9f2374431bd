"""Paired comparisons of two evaluations on the same eval set, with document-clustered errors.

Two runs scored on the same validation sequences share every sequence's difficulty, so the SE of
their difference is far smaller than the two SEs combined as if independent, and neighbouring
chunks of one document share it too, so the SE is clustered by document. Both need the
per-sequence losses each run saves (dlmscale/run_dir.py: losses_path). Where a run has none (runs
from before they were saved), callers fall back to the independent combination and say so.
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

import numpy as np

from dlmscale import run_dir as rundir
from dlmscale.data import evalset

PAIRED = "paired per-sequence, clustered by document"
PAIRED_ITEMS = "paired per item (the same task items at both evaluations)"
INDEPENDENT = "independent SEs combined (no per-sequence losses saved)"


def load(run_dir: str | pathlib.Path, step) -> dict | None:
  """The saved per-sequence record of `run_dir` at `step`, or None when there is none."""
  if step is None or not np.isfinite(step):
    return None
  path = rundir.losses_path(run_dir, int(step))
  if not path.is_file():
    return None
  try:
    return evalset.load_losses(path)
  except (OSError, ValueError, KeyError):
    return None


def load_items(run_dir: str | pathlib.Path, step) -> dict | None:
  """The per-item task record (dlmscale/train/task_curve.py item_scores) of the mc row at `step`."""
  if step is None or not np.isfinite(step):
    return None
  path = rundir.losses_path(run_dir, int(step), "mc")
  try:
    with np.load(path) as z:
      return {k: np.asarray(z[k], np.float64) for k in ("credit_N", "nll_gap_N", "label_N")}
  except (OSError, ValueError, KeyError):
    return None


def item_difference(a: dict | None, b: dict | None, key: str) -> dict | None:
  """mean over items of a[key] - b[key] ("credit" or "nll_gap") with its SE over items; None unless
  both records hold the same items (same count, same labels)."""
  if (a is None or b is None or a["label_N"].shape != b["label_N"].shape
      or not np.array_equal(a["label_N"], b["label_N"])):
    return None
  d_N = a[f"{key}_N"] - b[f"{key}_N"]
  se = float(np.std(d_N, ddof=1) / np.sqrt(d_N.size)) if d_N.size > 1 else float("nan")
  return dict(diff=float(d_N.mean()), se=se, n_items=int(d_N.size),
              n_changed=int(np.sum(d_N != 0)))


def mean_of(records: Sequence[dict | None]) -> dict | None:
  """The per-sequence mean over seeds of one grid point (None unless all share one eval set)."""
  if not records or any(r is None for r in records):
    return None
  first = records[0]
  if any(not np.array_equal(r["chunk_N"], first["chunk_N"]) for r in records[1:]):
    return None
  return dict(first, loss_N=np.mean([r["loss_N"] for r in records], axis=0))


def difference(a: dict | None, b: dict | None) -> dict | None:
  """mean(a - b) per sequence with its document-clustered SE; None unless both are on one eval set."""
  if a is None or b is None or not np.array_equal(a["chunk_N"], b["chunk_N"]):
    return None
  d_N = np.asarray(a["loss_N"], np.float64) - np.asarray(b["loss_N"], np.float64)
  return dict(diff=float(d_N.mean()), se=evalset.clustered_se(d_N, a["document_N"]),
              n_sequences=int(d_N.size), n_documents=int(np.unique(a["document_N"]).size))


def diff_se(a: dict | None, b: dict | None, se_a: float, se_b: float) -> tuple[float, str]:
  """The SE of loss(a) - loss(b): paired when both records exist, else the independent hypot."""
  d = difference(a, b)
  if d is not None and math.isfinite(d["se"]):
    return d["se"], PAIRED
  return float(np.hypot(np.nan_to_num(se_a), np.nan_to_num(se_b))), INDEPENDENT


def verdict(value: float, se: float, z: float = 1.96) -> str:
  """'inconclusive' when the interval value +/- z se contains 0; else which side it lies on."""
  if se is None or not math.isfinite(se) or se <= 0:
    return "no interval"
  if abs(value) <= z * se:
    return "inconclusive"
  return "positive" if value > 0 else "negative"
