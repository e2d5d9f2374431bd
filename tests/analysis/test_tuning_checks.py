"""The tuning-set checks of a WSD grid: the lr sweep reads branch ends (never the trunk) and keeps a
weight-decay variant apart from the same rate's base runs; the weight-decay check pairs the two."""

from __future__ import annotations

import numpy as np

from analysis.findings import answer, tuning
from analysis.render import tuning as render_tuning
from analysis.runs import collect
from helpers import fakeruns

U, N = 1e6, 1e5


def _family(root, tag: str, lr: float, wd: float, shift: float) -> None:
  tune = {"eval.set": "tune", "optim.lr": lr, "optim.weight_decay": wd}
  fakeruns.make_run(root, objective="mdm", n=N, u=U, epochs=3.2, name=f"trunk-{tag}", n_eval=8, loss_shift=shift,
                    config_extra={**tune, "trunk.branch_steps": [10], "optim.schedule": "constant"})
  fakeruns.make_run(root, objective="mdm", n=N, u=U, epochs=4.0, name=f"e4-{tag}", n_eval=4, loss_shift=shift,
                    config_extra={**tune, "branch.trunk": f"trunk-{tag}", "branch.start_step": 10,
                                  "optim.schedule": "wsd"})


def _grid(root):
  _family(root, "lr1", 1e-3, 0.1, 0.0)
  _family(root, "lr2", 2e-3, 0.1, 0.2)
  _family(root, "wd", 1e-3, 0.3, 0.5)
  return collect.collect(root).runs


def test_lr_sweep_reads_branch_ends_and_keeps_weight_decays_apart(tmp_path):
  runs = _grid(tmp_path)
  sweep = answer.lr_sweep(runs)
  assert sorted((s["epochs"], s["weight_decay"]) for s in sweep) == [(4.0, 0.1), (4.0, 0.3)]
  (base,) = [s for s in sweep if s["weight_decay"] == 0.1]
  assert [p["lr"] for p in base["points"]] == [1e-3, 2e-3] and base["chosen_lr"] == 1e-3
  end = runs.set_index("run_name").loc["e4-lr1", "final_eval_loss"]
  assert np.isclose(base["points"][0]["loss"], end)  # the branch's end, not a trunk's best


def test_weight_decay_check_pairs_the_other_decay_with_the_base(tmp_path):
  runs = _grid(tmp_path)
  (c,) = tuning.weight_decay_check(runs)
  by = runs.set_index("run_name")["final_eval_loss"]
  assert (c["base"], c["other"], c["lr"], c["epochs"]) == (0.1, 0.3, 1e-3, 4.0)
  assert np.isclose(c["other_minus_base"], by["e4-wd"] - by["e4-lr1"])
  assert c["verdict"] == "positive"  # 0.5 nats worse, far beyond the fake runs' errors
  text = "\n".join(render_tuning.weight_decay_section([c]))
  assert "## Weight-decay check (tuning set)" in text and "the study's decay is better" in text
  assert render_tuning.weight_decay_section([]) == []
  tiny = dict(c, other_minus_base=0.002, se=1e-5, verdict="negative")  # beyond errors, yet nothing
  assert "negligible" in "\n".join(render_tuning.weight_decay_section([tiny]))
