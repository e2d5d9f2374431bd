"""bench/train_bench.py end to end on the smallest ladder size: the JSON line a user gets is complete
and its numbers hang together (FLOPs from dlmscale.model.flops, tokens/s from the step time, a fresh model's
loss at ln(V - 1), memory measured in the child process)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import REPO, subprocess_env

FIELDS = ("size", "objective", "impl", "backend", "device_kind", "batch", "seq_len", "dtype",
          "remat", "attention", "flops_per_step", "xla_flops_per_step", "step_s", "step_s_best",
          "tokens_per_s", "mfu", "mfu_best", "mfu_cpu", "peak_flops", "peak_source",
          "matmul_peak_measured", "peak_rss_mb", "rss_baseline_mb", "state_mb", "loss")


def _bench(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "bench.train_bench", *args], cwd=REPO,
                        env=subprocess_env(), capture_output=True, text=True, timeout=120)


def test_json_line_for_a_tiny_size(tmp_path):
  out = tmp_path / "bench.jsonl"
  B, L, V = 4, 32, 64
  proc = _bench("--size", "s0.1M", "--objective", "ar", "--batch", str(B), "--seq_len", str(L),
                "--vocab", str(V), "--steps", "2", "--warmup", "1", "--reps", "1", "--peak_n", "256",
                "--json_out", str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")] == [row]
  assert set(FIELDS) <= set(row)
  from dlmscale.model import flops
  from dlmscale.model import transformer as model
  cfg = model.ModelConfig(vocab_size=V, d_model=64, n_layers=2, n_heads=2, d_ff=192, max_len=L)
  # By hand, per token (s0.1M: D 64, 2 layers, 2 heads of 32, F 192, V 64, causal L 32):
  #   dense 2 x 2 layers x (4 D^2 + 3 D F) = 4 x (16384 + 36864)       = 212992
  #   attention 2 layers x 4 D x (L + 1) / 2 keys = 512 x 16.5          =   8448
  #   unembedding 2 D V = 2 x 64 x 64                                   =   8192
  # forward 229632; train 3x = 688896 per token; x B L = 128 tokens  = 88178688.
  assert row["flops_per_step"] == 88_178_688
  assert row["tokens_per_s"] == B * L / row["step_s"]
  assert row["step_s_best"] <= row["step_s"] and 0 < row["mfu"] <= row["mfu_best"]
  assert row["peak_source"].startswith("measured") and row["matmul_peak_measured"] > 1e8
  # Model FLOPs count only matmuls; XLA counts everything, so it is a little higher, never lower.
  assert row["flops_per_step"] <= row["xla_flops_per_step"] < 2 * row["flops_per_step"]
  assert abs(row["loss"] - math.log(V - 1)) < 0.1  # a fresh model is uniform over the V - 1 tokens
  assert row["peak_rss_mb"] > row["rss_baseline_mb"] > 0
  # The train state: float32 params plus AdamW's two moments (and a few step counters).
  assert abs(row["state_mb"] - 3 * 4 * flops.param_counts(cfg)["total"] / 2**20) < 1e-3
  assert "| s0.1M | ar | real | 4x32 |" in proc.stdout  # the readable table


def test_unknown_size_is_a_user_error():
  proc = _bench("--size", "s7M")
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: unknown --size 's7M'") and "s10M" in proc.stderr
