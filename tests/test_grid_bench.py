"""bench/grid_bench.py's arithmetic: the phase breakdown adds up to the slots' time, and start-up is
what the trainers did not account for. (The grid itself is timed by running the bench, not here.)"""

from __future__ import annotations

import json

import pytest

from bench import grid_bench
from dlmscale.train import timer as phases


def test_breakdown_sums_trainer_phases_and_leaves_the_rest_to_startup():
  summaries = [{"phases": {"data": 1.0, "compile": 4.0, "train": 2.0, "eval": 0.5, "checkpoint": 0.25,
                           "other": 0.25, "total": 8.0}},
               {"phases": {"data": 0.5, "compile": 1.0, "train": 6.0, "eval": 1.0, "checkpoint": 0.5,
                           "other": 0.0, "total": 9.0}}]
  out = grid_bench.breakdown(summaries, launcher_s=10.0, report_s=3.0, parallel=2)
  assert out == {"data": 1.5, "compile": 5.0, "train": 8.0, "eval": 1.5, "checkpoint": 0.75,
                 "other": 0.25, "startup": 3.0, "report": 3.0}
  assert sum(out.values()) == pytest.approx(2 * 10.0 + 3.0)


def test_collect_reads_every_summary_and_the_manifest(tmp_path):
  for name, flops in (("a", 1e9), ("b", 3e9)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "summary.json").write_text(json.dumps({"run_name": name, "flops": flops}))
  (tmp_path / "grid_manifest.json").write_text(json.dumps({"runs": {"a": {"wall_s": 1.0}}}))
  summaries, manifest = grid_bench.collect(tmp_path)
  assert [s["flops"] for s in summaries] == [1e9, 3e9] and manifest["runs"]["a"]["wall_s"] == 1.0


def test_phase_clock_moves_compile_time_out_of_the_enclosing_phase():
  import jax
  import jax.numpy as jnp
  with phases.PhaseClock() as clock:
    with clock.phase("eval"):
      jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.arange(7.0)).block_until_ready()  # a fresh compile
  out = clock.summary()
  assert out["compile"] > 0 and out["eval"] >= 0
  assert out["compile"] + out["eval"] + out["other"] == pytest.approx(out["total"], abs=2e-3)
  assert phases._active == []  # a finished clock hears no more compiles


def test_trained_counts_a_branch_from_its_start_step(tmp_path):
  for name, steps, start in (("trunk", 40, 0), ("e2", 50, 40)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "summary.json").write_text(json.dumps(
        {"run_name": name, "steps": steps, "batch_size": 2, "seq_len": 8, "final_eval_loss": 1.0}))
    (tmp_path / name / "config.json").write_text(json.dumps({"branch": {"start_step": start}}))
  got = grid_bench.trained(tmp_path)
  assert got["trunk"]["tokens"] == 40 * 16 and got["e2"]["tokens"] == 10 * 16
