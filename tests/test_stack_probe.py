"""bench/stack_probe.py: the vmapped stack it times computes the same runs as the plain step, and its
per-run figures are the stack's divided by the stack size (issue 16's stacked-runs measurement)."""

from __future__ import annotations

import json

from bench import stack_probe
from dlmscale.model import flops
from dlmscale.model import transformer as model

TINY = ["--set=batch_size=4", "--set=data.seq_len=32", "--set=data.vocab_size=64",
        "--set=model_size=s0.1M", "--peak_n=256", "--steps=1"]


def test_stack_matches_plain_step_and_reports_per_run_figures(capsys):
  stack_probe.main([*TINY, "--stacks=2", "--objectives=mdm", "--matmuls"])  # diffusion: masks per run
  rows = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
  matmuls = rows.pop()["narrow_matmuls_frac_peak_cpu"]  # the step's 8 matmul shapes, each timed
  assert len(matmuls) == 8 and all(0 < v < 100 for v in matmuls.values()), matmuls
  assert [r["objective"] for r in rows] == ["mdm"]
  cfg = model.ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_ff=192, max_len=32,
                          causal=False)
  for r in rows:
    assert r["flops_per_step"] == flops.train_flops_per_step(cfg, 32, 4)
    for n in (2,):
      s = r[f"stack{n}"]
      assert s["loss_diff_vs_plain"] < 1e-5, (r["objective"], n, s)  # same run, same loss
      assert abs(s["s_per_run_step"] - s["s_per_step"] / n) < 1e-12
      assert abs(s["gflops"] - n * r["flops_per_step"] / s["s_per_step"] / 1e9) < 1e-6
