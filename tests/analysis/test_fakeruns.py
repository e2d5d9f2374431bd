"""The fabricated runs (helpers/fakeruns.py) follow the run-directory contract the analysis reads."""

from __future__ import annotations

import json

from helpers.fakeruns import SEQ_LEN, make_run


def test_fabricated_run_follows_the_contract(tmp_path):
  run = make_run(tmp_path, objective="mdm", n=1e6, u=1e6, epochs=4, mc_accuracy=0.3)
  config = json.loads((run / "config.json").read_text())
  assert config["objective"] == "mdm" and config["data"]["seq_len"] == SEQ_LEN
  rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
  for r in rows:
    assert {"step", "split", "loss", "tokens_seen", "epoch", "flops", "wall_s"} <= set(r)
    if r["split"] == "eval":
      assert "loss_se" in r
  summary = json.loads((run / "summary.json").read_text())
  evals = [r for r in rows if r["split"] == "eval"]
  assert summary["final_eval_loss"] == evals[-1]["loss"]
  assert summary["best_eval_loss"] == min(r["loss"] for r in evals)
  assert summary["tokens_seen"] == evals[-1]["tokens_seen"] <= 4e6
  partial = make_run(tmp_path, objective="ar", n=1e5, u=1e6, epochs=4, finished=False)
  assert not (partial / "summary.json").exists()
