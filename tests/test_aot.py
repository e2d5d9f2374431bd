"""Ahead-of-time compiles for TPU topologies on this CPU host (dlmscale/aot.py, launch/aot.py).

The compile tests need libtpu (requirements-tpu.txt, its own venv; .ci/run makes one for the slow
phase) and are skipped with that reason where it is absent. The rest run everywhere in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types

import pytest

from configs import base, datacons, grid as grid_lib
from dlmscale import aot, flops, hardware, model as model_lib
from tests.conftest import REPO, subprocess_env

needs_libtpu = pytest.mark.skipif(
    not aot.tpu_compiler_available(),
    reason="libtpu is not installed (pip install -r requirements-tpu.txt in a separate venv)")


def _fake_devices(n: int, hosts: int) -> list:
  return [types.SimpleNamespace(process_index=i * hosts // n, device_kind="TPU v5 lite") for i in range(n)]


def _cluster_point(size: str, objective: str):
  points = [p for p in datacons.sweep("scale=cluster")
            if p["model_size"] == size and p["objective"] == objective]
  return grid_lib.apply_overrides(datacons.get_config("scale=cluster"), points[0])


def _small(objective: str = "ar", **overrides):
  """A wide, shallow model on short sequences: big enough to matter, quick to compile."""
  c = base.get_config()
  c.objective, c.model_size = objective, "custom"
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.d_ff = 1024, 2, 8, 2752
  c.model.dtype = "bfloat16"
  c.data.vocab_size, c.data.seq_len = 8192, 512
  c.batch_size, c.eval.batch_size, c.eval.mc_samples = 16, 16, 2
  return aot.with_overrides(c, overrides)


# --- everywhere -----------------------------------------------------------------------------------


def test_v5p_is_not_taken_for_v5e():
  """v5p reports device_kind 'TPU v5', a prefix of v5e's 'TPU v5 lite'; each gets its own figures."""
  assert hardware.lookup(hardware.PEAK_BF16, "TPU v5") == 459e12
  assert hardware.lookup(hardware.PEAK_BF16, "TPU v5 lite") == 197e12
  assert hardware.published_memory("TPU v5").hbm_bytes > 5 * hardware.published_memory("TPU v5 lite").hbm_bytes
  assert hardware.lookup(hardware.PEAK_BF16, "NVIDIA H200 NVL") == hardware.PEAK_BF16["NVIDIA H200"]
  assert hardware.lookup(hardware.HBM, "Intel Gaudi") is None
  assert all(m.source for m in hardware.HBM.values())


def test_compiler_out_of_memory_messages_are_read():
  msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
         "temporaries (16.73G) exceeds available HBM (15.75G).")
  oom = aot.out_of_memory(msg)
  assert oom["what"] == "HLO temporaries" and oom["used_bytes"] > oom["limit_bytes"] == 15.75 * 2**30
  assert aot.out_of_memory("Used 20.5G of 15.75G hbm. Exceeded hbm capacity by 4.75G.")["used_bytes"] == 20.5 * 2**30
  assert aot.out_of_memory("INVALID_ARGUMENT: bad sharding") is None


def test_changes_to_try_are_cumulative_and_smallest_first():
  c = aot.with_overrides(_small(), {"batch_size": 64})
  tries = aot.changes_to_try(c, _fake_devices(16, 4))
  assert [o for _, o in tries] == [
      {"mesh.data": 1, "mesh.fsdp": 16},
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "dots"},
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full"},
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "batch_size": 32},
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "batch_size": 16},
  ]
  assert "changes the run" in tries[-1][0]
  done = aot.with_overrides(c, {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "batch_size": 16})
  assert aot.changes_to_try(done, _fake_devices(16, 4)) == []


@pytest.mark.parametrize("first_fit", [0, 1, 3, 4, None])
def test_find_fit_bisects_to_the_first_change_that_fits(monkeypatch, first_fit):
  """Against a fake compiler whose memory falls with each cumulative change: the same answer as
  trying every change in order, in fewer compiles, and 'nothing fits' after one compile."""
  c = aot.with_overrides(_small(), {"batch_size": 64})
  devices = _fake_devices(16, 4)
  changes = [o for _, o in aot.changes_to_try(c, devices)]
  compiled = []

  def fake_attempt(config, devs):
    del devs
    i = next(i for i, o in enumerate(changes) if aot.with_overrides(c, o).to_dict() == config.to_dict())
    compiled.append(i)
    return {"status": "ok" if first_fit is not None and i >= first_fit else "too_big"}

  monkeypatch.setattr(aot, "attempt", fake_attempt)
  fit = aot.find_fit(c, devices, max_tries=10)
  if first_fit is None:
    assert not fit["found"] and compiled == [len(changes) - 1]
    return
  assert fit["found"] and fit["first"] and fit["overrides"] == changes[first_fit]
  assert len(compiled) <= 1 + (len(changes) - 1).bit_length() < len(changes) + 1


def test_roofline_takes_the_slower_of_compute_and_memory():
  r = aot.roofline(2e12, 1e9, peak=1e12, bandwidth=1e12)
  assert r["step_s"] == 2.0 and r["bound"] == "compute"
  assert aot.roofline(1e9, 4e12, 1e12, 1e12)["bound"] == "memory"


def test_accelerator_types_map_to_topologies():
  from launch import aot as aot_cli
  assert aot_cli.topology_for_accelerator("v5litepod-16") == "v5e:4x4"
  assert aot_cli.topology_for_accelerator("v5litepod-256") == "v5e:16x16"
  assert aot_cli.topology_for_accelerator("v6e-8") == "v6e:2x4"
  assert aot_cli.topology_for_accelerator("v5p-16") == "v5p:2x2x2"  # v5p types count TensorCores
  with pytest.raises(grid_lib.UserError, match="--aot_topology"):
    aot_cli.topology_for_accelerator("v5litepod-12")


@pytest.mark.skipif(aot.tpu_compiler_available(), reason="libtpu is installed here")
def test_tpu_launcher_aot_check_without_libtpu_stops_before_gcloud():
  p = subprocess.run([sys.executable, "-m", "launch.tpu", "--config=configs/datacons.py:scale=cluster",
                      "--workdir=/mnt/runs/dc", "--tpu=t", "--zone=z", "--accelerator_type=v5litepod-16",
                      "--dry_run", "--aot_check"], cwd=REPO, env=subprocess_env(), capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 2 and "libtpu" in p.stderr and "gcloud" not in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(aot.tpu_compiler_available(), reason="libtpu is installed here")
def test_without_libtpu_the_command_says_how_to_install_it(tmp_path):
  out = tmp_path / "rows.json"
  p = subprocess.run([sys.executable, "-m", "launch.aot", "--config=configs/datacons.py:scale=cluster",
                      "--topology=v5e:4x4", f"--json={out}"], cwd=REPO, env=subprocess_env(),
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 2, p.stderr
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and "libtpu" in lines[0] and "requirements-tpu.txt" in lines[0]
  assert not out.exists()


# --- with libtpu: real compiles -------------------------------------------------------------------


@needs_libtpu
@pytest.mark.slow
def test_largest_cluster_point_compiles_and_fits_on_v5e():
  """s1B exactly as the cluster grid configures it (FSDP over every chip, remat, batch 256 x 2048),
  on a 64-chip v5e slice (v5litepod-64: four sequences per chip)."""
  config = _cluster_point("s1B", "mdm")
  devices = aot.topology_devices("v5e:8x8")
  row = aot.attempt(config, devices)
  assert row["status"] == "ok", row.get("error")
  hbm = hardware.published_memory(devices[0].device_kind).hbm_bytes
  assert 0 < row["train"]["peak_bytes"] <= row["peak_bytes"] <= hbm
  # FSDP as asked: each chip holds 1/64 of the f32 parameters, not all of them.
  n_params = flops.param_counts(model_lib.model_config_from(config, config.data.vocab_size))["total"]
  assert row["params_bytes"] == pytest.approx(4 * n_params / len(devices), rel=0.05)
  assert row["roofline"]["step_s"] > 0 and 0 < row["roofline"]["mfu"] <= 1


@needs_libtpu
@pytest.mark.slow
def test_oversized_point_gets_a_change_that_compiles_and_fits():
  """1.7B parameters replicated on each chip (f32 weights and Adam moments: ~20 GB; the compiled
  12-layer version of this model held 10.5 GB and fit) do not fit a v5e chip; sharding the state
  over the four chips of a 2x2 does, and that mesh change alone is the first fit found."""
  config = _small("ar", **{"model.d_model": 2048, "model.n_heads": 16, "model.d_ff": 8192,
                           "model.n_layers": 24, "data.vocab_size": 32768})
  devices = aot.topology_devices("v5e:2x2")
  row = aot.attempt(config, devices)
  assert row["status"] == "too_big", row
  fit = aot.find_fit(config, devices, max_tries=6)
  assert fit["found"] and fit["first"], fit["tries"]
  assert fit["overrides"] == {"mesh.data": 1, "mesh.fsdp": 4}
  again = aot.attempt(aot.with_overrides(config, fit["overrides"]), devices)
  assert again["status"] == "ok" and again["peak_bytes"] <= again["hbm_bytes"]


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_compiled_flops_agree_with_flops_py(objective):
  """XLA's count for the partitioned train step, times the chips, against flops.py's.

  XLA computes the whole L x L score matrix for causal attention too, so for both families it is
  compared with flops.py's bidirectional count; the model FLOPs of AR (the MFU numerator) are lower
  by the masked half of the scores, and that difference is checked as well.
  """
  config = _small(objective)
  row = aot.attempt(config, aot.topology_devices("v5e:2x2"))
  assert row["status"] == "ok", row.get("error")
  assert row["xla_over_flops_py_full_attention"] == pytest.approx(1.0, abs=0.04)
  cfg = model_lib.model_config_from(config, config.data.vocab_size)
  L, B = config.data.seq_len, config.batch_size
  full = flops.train_flops_per_step(dataclasses.replace(cfg, causal=False), L, B)
  assert row["xla_flops_per_step"] >= 0.99 * full
  if objective == "ar":
    assert row["model_flops_per_step"] < full
    assert row["xla_over_model"] > row["xla_over_flops_py_full_attention"]


@needs_libtpu
@pytest.mark.slow
def test_multi_host_topology_compiles(tmp_path):
  """v5e:4x4 is four hosts of four chips: the batch splits over hosts as on the real slice."""
  devices = aot.topology_devices("v5e:4x4")
  assert aot.host_count(devices) == 4
  row = aot.attempt(_small("mdm", **{"mesh.data": 4, "mesh.fsdp": 4}), devices)
  assert row["status"] == "ok", row.get("error")
  assert row["train"]["argument_bytes"] > 0 and row["eval"]["peak_bytes"] > 0


@needs_libtpu
@pytest.mark.slow
def test_the_command_prints_a_row_per_shape_and_writes_them(tmp_path):
  out = tmp_path / "rows.json"
  p = subprocess.run([sys.executable, "-m", "launch.aot", "--config=configs/datacons.py:scale=test",
                      "--topology=v5e:2x2", f"--json={out}"], cwd=REPO, env=subprocess_env(),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  rows = json.loads(out.read_text())["rows"]
  assert {r["shape"].split()[0] for r in rows} == {"ar", "mdm"}  # 4 points, 2 shapes
  assert sum(len(r["points"]) for r in rows) == 4
  assert all(r["status"] == "ok" for r in rows)
  assert sum(line.startswith("| ar ") or line.startswith("| mdm ") for line in p.stdout.splitlines()) == 2
  again = subprocess.run([sys.executable, "-m", "launch.aot", "--config=configs/datacons.py:scale=test",
                          "--topology=v5e:2x2", f"--json={out}"], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
  assert again.returncode == 2 and "--force" in again.stderr  # nothing silently overwritten
