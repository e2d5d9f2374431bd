"""bench/gpu_check.sh run for real on CPU at a tiny size, so it works the first time it meets a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, subprocess_env


def test_gpu_check_script_runs_at_a_tiny_size(tmp_path):
  out = tmp_path / "check"
  env = subprocess_env(GPU_CHECK_TINY="1", PYTHON=sys.executable)
  proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
  assert sorted(r["objective"] for r in rows) == ["ar", "mdm"]
  for r in rows:
    assert r["size"] == "s0.1M" and r["micro_batch"] == 2 and r["loss_chunk"] == 16
    assert r["step_s"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["peak_rss_mb"] > 0
  summary = (out / "summary.txt").read_text()
  assert "MFU" in summary and summary.count("s0.1M") == 2
  assert (out / "device.txt").read_text().strip() and "exit 0" in (out / "tries.txt").read_text()
