"""analysis/lr_choice.py: the sweep's runs -> each family's lr multiplier, on tune-set runs only."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from configs import cpu_study, grid
from dlmscale import run_dir as rundir
from dlmscale.data import evalset
from analysis import lr_choice

DOCS_N = np.repeat(np.arange(10), 4)  # 40 tune sequences over 10 documents
DIFFICULTY_N = np.linspace(-1.0, 1.0, 40)  # shared by every run: what pairing cancels


def _run(root: pathlib.Path, obj: str, size: str, mult: float, losses: list[float], finished: bool = True,
         eval_set: str = "tune") -> None:
  d = root / f"{obj}-{size}-lr{mult}x"
  d.mkdir(parents=True)
  cfg = {"objective": obj, "model_size": size, "run_name": d.name, "optim": {"lr": grid.LR_BY_SIZE[size] * mult},
         "eval": {"set": eval_set}}
  (d / "config.json").write_text(json.dumps(cfg))
  rows = [{"step": 10 * (i + 1), "split": "eval", "loss": l, "loss_se": 0.05, "epoch": i + 1.0}
          for i, l in enumerate(losses)]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  es = evalset.EvalSet(chunk_ids_N=np.arange(40), document_N=DOCS_N, tokens_NxL=np.zeros((40, 2), np.int32))
  best = int(np.argmin(losses))
  for r in rows:  # per-sequence losses; away from the best step they carry a run-specific offset
    shift = 0.0 if r["step"] == rows[best]["step"] else 1.0 + mult
    evalset.save_losses(rundir.losses_path(d, r["step"]), r["loss"] + shift + DIFFICULTY_N, es)
  if finished:
    (d / "summary.json").write_text("{}")


def _sweep(root: pathlib.Path) -> None:
  # AR: best at 1x at both sizes. MDM: 2x at s0.1M, 4x at s0.4M -> 2x has the smaller mean excess
  # (0.05 vs 0.1). Scores are each run's minimum, not its last evaluation.
  for size in ("s0.1M", "s0.4M"):
    for m, l in ((0.5, 4.4), (1.0, 4.2), (2.0, 4.3)):
      _run(root, "ar", size, m, [5.0, l, l + 1.0])
  for size, table in (("s0.1M", {1.0: 4.9, 2.0: 4.6, 4.0: 4.8}), ("s0.4M", {1.0: 4.9, 2.0: 4.7, 4.0: 4.6})):
    for m, l in table.items():
      _run(root, "mdm", size, m, [5.5, l])


def test_choice_is_the_smallest_mean_excess_over_sizes_and_the_study_reads_it(tmp_path, monkeypatch):
  _sweep(tmp_path / "runs")
  out = tmp_path / "lr_choice.json"
  assert lr_choice.main([f"--runs={tmp_path / 'runs'}", f"--out={out}"]) == 0
  doc = json.loads(out.read_text())
  assert doc["multipliers"] == {"ar": 1.0, "mdm": 2.0}
  assert doc["families"]["mdm"]["best_multiplier_by_size"] == {"s0.1M": 2.0, "s0.4M": 4.0}
  assert not doc["families"]["ar"]["at_edge_of_sweep"] and doc["families"]["ar"]["complete"]
  assert doc["provenance"]["runs_found"] == 12 and doc["provenance"]["commit"]
  paired = doc["families"]["ar"]["paired_vs_best_by_size"]["s0.1M"]  # at each run's best step
  assert paired["best"] == 1.0 and paired["others"]["0.5"]["diff"] == pytest.approx(0.2)
  assert paired["others"]["0.5"]["se"] == pytest.approx(0.0, abs=1e-12)
  assert not paired["others"]["0.5"]["within_2se"]
  monkeypatch.setattr(cpu_study.lr_multipliers, "__defaults__", (out,))
  lrs = {(p["objective"], p["model_size"]): p["optim.lr"] for p in cpu_study.sweep()}
  assert lrs[("mdm", "s1M")] == pytest.approx(2.0 * grid.LR_BY_SIZE["s1M"])


def test_partial_sweep_uses_multipliers_finished_at_every_size(tmp_path):
  root = tmp_path / "runs"
  for size in ("s0.1M", "s0.4M"):
    _run(root, "ar", size, 1.0, [4.5])
    _run(root, "mdm", size, 1.0, [4.9])
  _run(root, "ar", "s0.1M", 2.0, [4.0])  # better, but not finished at s0.4M yet
  _run(root, "ar", "s0.4M", 2.0, [6.0], finished=False)
  c = lr_choice.choose(lr_choice.read_sweep(root), "ar")
  assert c["multiplier"] == 1.0 and not c["complete"]


def test_runs_scored_on_the_val_set_are_refused(tmp_path, capsys):
  _run(tmp_path, "ar", "s0.1M", 1.0, [4.5], eval_set="val")
  assert lr_choice.main([f"--runs={tmp_path}", f"--out={tmp_path / 'x.json'}"]) == 2
  assert "eval.set='val'" in capsys.readouterr().err
  assert not (tmp_path / "x.json").exists()
