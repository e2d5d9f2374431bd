"""WSD grids in the analysis: a trunk's evaluations are the curve, each cooldown branch's end is the
annealed point for its E (the points table, the epochs table and the frontier's points)."""

from __future__ import annotations

import numpy as np

from analysis.findings import epochs, points
from analysis.runs import collect
from helpers import fakeruns

U, N = 1e6, 1e5


def _wsd_grid(root):
  fakeruns.make_run(root, objective="ar", n=N, u=U, epochs=3.2, name="trunk", n_eval=8,
                    config_extra={"trunk.branch_steps": [10, 20], "optim.schedule": "constant"})
  for e in (2.0, 4.0):
    fakeruns.make_run(root, objective="ar", n=N, u=U, epochs=e, name=f"e{e:g}", n_eval=4,
                      config_extra={"branch.trunk": "trunk", "branch.start_step": 10,
                                    "optim.schedule": "wsd"})
  return collect.collect(root)


def test_roles_come_from_the_config(tmp_path):
  got = _wsd_grid(tmp_path)
  assert dict(zip(got.runs["run_name"], got.runs["role"])) == {"trunk": "trunk", "e2": "branch", "e4": "branch"}
  # a branch's end is annealed (its cooldown); the constant-rate trunk's evaluations are not
  assert dict(zip(got.runs["run_name"], got.runs["annealed"])) == {"trunk": False, "e2": True, "e4": True}


def test_branch_ends_are_the_points_and_the_trunk_the_curve(tmp_path):
  got = _wsd_grid(tmp_path)
  pts = points.points(got.runs)
  assert sorted(pts["epochs"]) == [2.0, 4.0]  # the trunk is no point of its own
  runs = got.runs.set_index("run_name")
  for e in (2.0, 4.0):
    row = pts[pts["epochs"] == e].iloc[0]
    assert row["best_loss"] == row["loss"] == runs.loc[f"e{e:g}", "final_eval_loss"]
    assert row["best_epoch"] == e
  along = points.curve_points(got.runs, got.curves)
  trunk_evals = (got.curves["run_name"] == "trunk") & (got.curves["split"] == "eval")
  assert (along["runs"] == "trunk").sum() == trunk_evals.sum()
  for name in ("e2", "e4"):  # one point each: its end
    assert list(along.loc[along["runs"] == name, "step"]) == [runs.loc[name, "final_eval_step"]]
  found = epochs.epoch_findings(points.clean(pts))
  (b,) = found["per_budget"]
  assert b["epochs_tried"] == [2.0, 4.0] and np.isfinite(b["best_loss"])


def test_branch_ends_are_compared_across_branches_not_within_one(tmp_path):
  """A branch's one evaluation is its end, so "best at the end" says nothing: the family's best E
  and its rise are read across the branches, to the longest one."""
  got = _wsd_grid(tmp_path)
  pts = points.clean(points.points(got.runs))
  assert pts["annealed"].all()
  (b,) = epochs.epoch_findings(pts)["per_budget"]
  loss = dict(zip(pts["epochs"], pts["loss"]))
  best = min(loss, key=loss.get)
  assert b["basis"] == epochs.FINAL_BASIS
  assert (b["best_epochs"], b["last_epochs"]) == (best, 4.0)
  assert np.isclose(b["rise_after"], loss[4.0] - loss[best])


def test_an_annealed_best_is_still_improving_only_when_no_longer_branch_was_tried(tmp_path):
  from analysis.findings import answer  # pylint: disable=g-import-not-at-top
  got = _wsd_grid(tmp_path)
  pts = points.clean(points.points(got.runs))
  for drop, still in ((None, None), (4.0, True)):
    sub = pts if drop is None else pts[pts["epochs"] != drop]
    (entry,) = answer.bests(sub, got.runs)
    x = entry["families"]["ar"]
    assert x["annealed"]
    expect = x["epochs_planned"] == max(sub["epochs"]) if still is None else still
    assert x["still_improving"] == expect
