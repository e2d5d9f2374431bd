"""What a run records about itself holds up: the data it trained on (a resume on changed data is
refused, or continued on request and recorded) and metrics.jsonl (append-only, self-healing)."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from conftest import tiny_config, write_tiny_corpus
from dlmscale import run_dir as rundir
from dlmscale.train import loop as train
from dlmscale.errors import UserError


def _stopped_run(cfg, workdir: pathlib.Path, monkeypatch, step: int = 5) -> None:
  monkeypatch.setenv("DLMSCALE_FAULT", f"term:{step}")  # SIGTERM to itself: checkpoint and return
  assert train.train_and_evaluate(cfg, workdir) is None
  monkeypatch.delenv("DLMSCALE_FAULT")


def test_resume_on_changed_data_is_refused_naming_it_unless_allowed(tmp_path, data_cache, monkeypatch):
  corpus = write_tiny_corpus(tmp_path / "corpus")
  cfg = tiny_config(corpus, data_cache, "ar")
  workdir = tmp_path / "run"
  _stopped_run(cfg, workdir, monkeypatch)
  recorded = json.loads((workdir / "config.json").read_text())["data_sha256"]
  assert set(recorded) == {"train", "val", "tokenizer"}
  config_before = (workdir / "config.json").read_bytes()
  # A one-word edit in every document: the corpus is prepared again, with other chunks.
  for doc in (tmp_path / "corpus").glob("*.txt"):
    doc.write_text(doc.read_text().replace("def ", "def  ", 1))
  with pytest.raises(UserError, match=r"other data.*train sha256.*--allow_new_data"):
    train.train_and_evaluate(cfg, workdir)
  assert (workdir / "config.json").read_bytes() == config_before
  summary = train.train_and_evaluate(cfg, workdir, allow_new_data=True)
  assert summary is not None and summary["final_eval_loss"] is not None
  stored = json.loads((workdir / "config.json").read_text())
  assert stored["data_sha256_replaced"] == [recorded] and stored["data_sha256"] != recorded
  assert stored["data_sha256"]["train"] != recorded["train"]


def test_metrics_log_skips_damaged_rows_and_only_rewrites_when_it_must(tmp_path):
  p = tmp_path / "metrics.jsonl"
  good = "".join(json.dumps({"step": s, "split": "train", "loss": 1.0}) + "\n" for s in range(4))
  p.write_text(good)
  ino = p.stat().st_ino
  rundir.MetricsLog(p.parent, resume_step=10).close()
  assert p.read_text() == good and p.stat().st_ino == ino  # nothing to drop: untouched
  p.write_bytes(good.encode() + b'{"split": "eval", "loss": 2.0}\n\xff\xfe\x00garbage\n[1, 2]\n')
  log = rundir.MetricsLog(p.parent, resume_step=10)
  log.close()
  assert (log.dropped, log.last_step) == (3, 3)
  assert p.read_text() == good


def test_metrics_log_deleted_while_live_is_written_again(tmp_path, capsys):
  p = tmp_path / "metrics.jsonl"
  log = rundir.MetricsLog(p.parent, resume_step=0)
  log.write({"step": 1, "split": "train", "loss": 1.0})
  p.unlink()
  log.write({"step": 2, "split": "train", "loss": 0.5})
  log.close()
  assert [r["step"] for r in rundir.read_metrics(p.parent)] == [2]
  assert "was deleted during the run" in capsys.readouterr().out


def test_metrics_deleted_between_runs_is_reported_and_summary_has_losses(
    tiny_corpus, data_cache, tmp_path, monkeypatch, capsys):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  workdir = tmp_path / "run"
  _stopped_run(cfg, workdir, monkeypatch)
  (workdir / "metrics.jsonl").unlink()
  capsys.readouterr()
  summary = train.train_and_evaluate(cfg, workdir)
  out = capsys.readouterr().out
  assert "warning:" in out and "cannot be rebuilt" in out and "step 5" in out
  rows = rundir.read_metrics(workdir)
  assert rows[0] == {**rows[0], "step": 5, "split": "eval"}  # the restored step, measured again
  assert all(summary[k] is not None for k in ("final_eval_loss", "best_eval_loss", "best_step"))
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["final_eval_loss"] == summary["final_eval_loss"]


def test_row_without_step_does_not_break_a_resume(tiny_corpus, data_cache, tmp_path, monkeypatch):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  workdir = tmp_path / "run"
  _stopped_run(cfg, workdir, monkeypatch)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"split": "train", "loss": 1.0}\n')
  summary = train.train_and_evaluate(cfg, workdir)
  assert summary["final_eval_loss"] is not None
  assert all("step" in r for r in rundir.read_metrics(workdir))
  shutil.rmtree(workdir)
