"""The built-in multiple-choice task over training: one metrics row (split "mc") per scored evaluation.

Validation loss alone can hide what the model learns for downstream use (Ni et al. 2025: diffusion's
task gap keeps growing while its validation loss rises), so with eval.task_every = N > 0 the trainer
scores the built-in task (dlmscale/eval/builtin_task.py, validation split only) at every N-th evaluation
and at the final one, exactly as `python -m dlmscale.evaluate` scores it (same items, same method,
same seeds), so the last row of the curve is the number eval.json reports for that checkpoint.

The row holds the accuracy and the NLL gap: per item, the other choices' mean NLL minus the true
choice's NLL (nats; > 0 when the model prefers the truth on average), with SEs over items. Its
companion file (run_dir.losses_path(..., "mc"), like the validation rows' per-sequence losses) holds
the per-item numbers, so a task change between two evaluations can be paired item by item.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import ml_collections
import numpy as np

from dlmscale.data import pipeline
from dlmscale.eval import builtin_task, choices as mc_scoring, scoring
from dlmscale.objectives.mdm import ElboSettings
from dlmscale.train import open_run


def due(step: int, every_steps: int, task_every: int, total: int) -> bool:
  """Is the evaluation at `step` one that scores the task? (every N-th of the cadence, and the last)"""
  if task_every <= 0:
    return False
  return step == total or (step % every_steps == 0 and (step // every_steps) % task_every == 0)


def nll_gaps(items: Sequence[mc_scoring.McItem], scores: Sequence[np.ndarray]) -> np.ndarray:
  """Per item: mean NLL of the other choices minus the true choice's NLL (scores are log-likelihoods)."""
  gaps = []
  for item, s_C in zip(items, scores):
    s_C = np.asarray(s_C, np.float64)
    others_C = np.delete(s_C, item.label)
    gaps.append(s_C[item.label] - float(np.mean(others_C)))  # (-others) - (-true)
  return np.asarray(gaps, np.float64)


def item_scores(items: Sequence[mc_scoring.McItem], scores: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """Per item: its accuracy credit, NLL gap, label and choice scores (NaN-padded to the widest)."""
  C = max(len(s) for s in scores)
  scores_NxC = np.full((len(scores), C), np.nan)
  for i, s in enumerate(scores):
    scores_NxC[i, :len(s)] = s
  return {"credit_N": np.asarray([mc_scoring.credit(s, it.label) for it, s in zip(items, scores)]),
          "nll_gap_N": nll_gaps(items, scores), "label_N": np.asarray([it.label for it in items]),
          "scores_NxC": scores_NxC}


def save_item_scores(path: str | os.PathLike, record: dict[str, np.ndarray]) -> None:
  """One evaluation's per-item record at `path` (atomic; run_dir.losses_path(..., "mc") names it)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    np.savez(f, **record)
  os.replace(tmp, path)


def load_item_scores(path: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: np.asarray(z[k]) for k in ("credit_N", "nll_gap_N", "label_N", "scores_NxC")}


def summarise(items: Sequence[mc_scoring.McItem], scores: Sequence[np.ndarray]) -> dict[str, float]:
  """The mc row's numbers: accuracy and NLL gap, each with its SE over items."""
  r = mc_scoring.accuracy(items, scores)
  gap, gap_se = mc_scoring.mean_and_se(nll_gaps(items, scores))
  return {"mc_accuracy": r.accuracy, "mc_accuracy_se": r.accuracy_se, "mc_nll_gap": gap,
          "mc_nll_gap_se": gap_se, "mc_items": r.n_items}


class TaskCurve:
  """The run's items (build_items, built once by the trainer before its workdir is touched); the
  scorer compiles on the first call (mc_scoring caches it for the run's one apply_fn)."""

  def __init__(self, built: open_run.Built, items: Sequence[mc_scoring.McItem]):
    self.built, self.config = built, built.config
    self.method = scoring.scoring_method(self.config.objective, "")
    self.elbo = ElboSettings.of(self.config)
    self.items = list(items)

  def due(self, step: int, total: int) -> bool:
    return due(step, int(self.config.eval.every_steps), int(self.config.eval.task_every), total)

  def row(self, params) -> dict[str, Any]:
    """The task's numbers for `params` (deterministic: the same params give the same row)."""
    run = open_run.Loaded(self.config, self.built.data, self.built.setup, params=params)  # the live state
    r = scoring.score_task(run, self.items, self.method, int(self.config.eval.batch_size), self.elbo)
    self.last_items = item_scores(self.items, r.scores)  # the row's companion file (the loop saves it)
    return {**summarise(self.items, r.scores), "mc_method": self.method}


def describe(row: dict[str, Any]) -> str:
  return (f"task step {row['step']}: accuracy {row['mc_accuracy']:.4f} +/- {row['mc_accuracy_se']:.4f}, "
          f"NLL gap {row['mc_nll_gap']:.4f} +/- {row['mc_nll_gap_se']:.4f} nats "
          f"({row['mc_items']} items, {row['mc_method']})")


def build_items(config: ml_collections.ConfigDict, prepared: pipeline.Prepared,
                max_len: int) -> list[mc_scoring.McItem] | None:
  """The evaluator's built-in task (validation chunks only), or None when the task is off.

  Raises UserError when the validation split is too small for a task the config asked for."""
  if int(config.eval.task_every) <= 0:
    return None
  return builtin_task.make_task(prepared.val_chunks, prepared.eod_id, max_len,
                                n_items=builtin_task.DEFAULT_ITEMS)
