"""Ahead-of-time compiles for TPU topologies on this CPU host (dlmscale/aot/compiler.py, launch/aot.py).

The compile tests need libtpu (requirements-tpu.txt, its own venv; .ci/run makes one for the slow
phase) and are skipped with that reason where it is absent. The rest run everywhere in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import types

import pytest

from configs import base, datacons, grid as grid_lib
from dlmscale.aot import compiler as aot
from dlmscale.model import flops
from dlmscale.runtime import hardware
from dlmscale.model import transformer as model_lib
from dlmscale.train import steps as program
from dlmscale.aot import topologies
from tests.conftest import REPO, subprocess_env

needs_libtpu = pytest.mark.skipif(
    not topologies.tpu_compiler_available(),
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
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "micro_batch_size": 32},
      {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "micro_batch_size": 16},
  ]
  assert "the same run" in tries[-1][0] and "4 micro-batches" in tries[-1][0]
  done = aot.with_overrides(c, {"mesh.data": 1, "mesh.fsdp": 16, "model.remat": "full", "micro_batch_size": 16})
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


@pytest.mark.skipif(topologies.tpu_compiler_available(), reason="libtpu is installed here")
def test_tpu_launcher_aot_check_without_libtpu_stops_before_gcloud():
  p = subprocess.run([sys.executable, "-m", "launch.tpu", "--config=configs/datacons.py:scale=cluster",
                      "--workdir=/mnt/runs/dc", "--tpu=t", "--zone=z", "--accelerator_type=v5litepod-16",
                      "--dry_run", "--aot_check"], cwd=REPO, env=subprocess_env(), capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 2 and "libtpu" in p.stderr and "gcloud" not in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(topologies.tpu_compiler_available(), reason="libtpu is installed here")
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
def test_cluster_point_compiles_and_fits_on_a_multi_host_v5e_slice():
  """A cluster-grid point exactly as the grid configures it (FSDP over every chip, remat=full,
  batch 256 x 2048, vocab 50304) on v5e:4x4, four hosts of four chips (v5litepod-16): the batch
  splits over hosts as on the slice. s10M, the grid's smallest size: the compile-time cost of a
  test; the larger sizes are in docs/launching.md's table, from the same code path."""
  config = _cluster_point("s10M", "mdm")
  devices = topologies.topology_devices("v5e:4x4")
  assert len(devices) == 16 and topologies.host_count(devices) == 4
  row = aot.attempt(config, devices)
  assert row["status"] == "ok", row.get("error")
  hbm = hardware.published_memory(devices[0].device_kind).hbm_bytes
  assert 0 < row["train"]["peak_bytes"] <= row["peak_bytes"] <= hbm
  assert row["eval"]["peak_bytes"] > 0
  # FSDP as asked: each chip holds 1/16 of the f32 parameters, not all of them.
  n_params = flops.param_counts(program.model_config_from(config, config.data.vocab_size))["total"]
  assert row["params_bytes"] == pytest.approx(4 * n_params / len(devices), rel=0.05)
  assert row["roofline"]["step_s"] > 0 and 0 < row["roofline"]["mfu"] <= 1


@needs_libtpu
@pytest.mark.slow
def test_oversized_point_gets_a_change_that_compiles_and_fits():
  """1.2B parameters replicated on each chip (f32 weights, gradients and Adam moments: ~19 GB) do not
  fit a v5e chip's 16 GB; FSDP over the four chips of a 2x2 (~5 GB each) does. Four wide layers
  keep the compile short; remat is already full and one sequence per chip leaves no smaller batch,
  so the mesh change is the only one to try and the search compiles it once."""
  config = _small("ar", **{"model.d_model": 4096, "model.n_heads": 32, "model.d_ff": 16384,
                           "model.n_layers": 4, "data.vocab_size": 32768, "model.remat": "full",
                           "batch_size": 4, "eval.batch_size": 4})
  devices = topologies.topology_devices("v5e:2x2")
  row = aot.attempt(config, devices)
  assert row["status"] == "too_big", row
  fit = aot.find_fit(config, devices, max_tries=6)
  assert fit["found"] and fit["first"], fit["tries"]
  assert fit["overrides"] == {"mesh.data": 1, "mesh.fsdp": 4} and len(fit["tries"]) == 1
  fitted = fit["row"]  # the change, compiled
  assert fitted["status"] == "ok" and 0 < fitted["peak_bytes"] <= fitted["hbm_bytes"]


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_compiled_flops_agree_with_flops_py(objective):
  """XLA's count for the partitioned train step, times the chips, against flops.py's.

  XLA computes the whole L x L score matrix for causal attention too, so for both families it is
  compared with flops.py's bidirectional count; the model FLOPs of AR (the MFU numerator) are lower
  by the masked half of the scores, and that difference is checked as well. XLA's attention: XLA
  does not count the work inside a Pallas kernel (splash, attention=auto's choice on TPU).
  """
  config = _small(objective, **{"model.attention": "xla"})
  row = aot.attempt(config, topologies.topology_devices("v5e:2x2"))
  assert row["status"] == "ok", row.get("error")
  assert row["xla_over_flops_py_full_attention"] == pytest.approx(1.0, abs=0.04)
  cfg = program.model_config_from(config, config.data.vocab_size)
  L, B = config.data.seq_len, config.batch_size
  full = flops.train_flops_per_step(dataclasses.replace(cfg, causal=False), L, B)
  assert row["xla_flops_per_step"] >= 0.99 * full
  if objective == "ar":
    assert row["model_flops_per_step"] < full
    assert row["xla_over_model"] > row["xla_over_flops_py_full_attention"]


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("objective,heads", [("ar", 16), ("mdm", 8)])
def test_splash_attention_compiles_for_v5e_and_holds_no_score_matrix(objective, heads):
  """attention=auto is the Pallas splash kernel on TPU (causal for AR, full for MDM), at head_dim 64
  (the ladder's) and 128; it compiles for v5e under FSDP (inside shard_map) and needs fewer
  temporaries than XLA's attention, which holds the [B, H, L, L] scores for the backward pass."""
  devices = topologies.topology_devices("v5e:2x2")
  config = _small(objective, **{"model.n_heads": heads, "mesh.data": 1, "mesh.fsdp": -1, "model.attention": "auto"})
  row = aot.attempt(config, devices)
  assert row["status"] == "ok" and row["attention"] == "splash", row.get("error")
  xla = aot.attempt(aot.with_overrides(config, {"model.attention": "xla"}), devices)
  assert xla["attention"] == "xla" and row["train"]["temp_bytes"] < xla["train"]["temp_bytes"]


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


# --- GPUs: a target description captured on a real GPU (bench/capture_gpu_target.py) --------------

needs_cuda_plugin = pytest.mark.skipif(
    not topologies.cuda_compiler_available(), reason="JAX's CUDA plugin is not installed (pip install jax-cuda12-plugin)")

# Captured on an H200 by bench/capture_gpu_target.py (jax 0.11.2, CUDA 13 plugin): BENCHMARKS.md.
H200_TARGET = REPO / "bench" / "results" / "h200-2026-12-04" / "aot" / "h200_target.txtpb"


def test_drop_field_removes_scalars_and_nested_blocks():
  text = "a {\n  b: 1\n  c { d: 2 e { f: 3 } }\n  g: \"x\"\n}\nh: 4\n"
  assert topologies.drop_field(text, "c") == "a {\n  b: 1\n  \n  g: \"x\"\n}\nh: 4\n"
  assert topologies.drop_field(text, "g") == "a {\n  b: 1\n  c { d: 2 e { f: 3 } }\n}\nh: 4\n"
  assert topologies.drop_field(topologies.drop_field(text, "e"), "b") == "a {\n  c { d: 2  }\n  g: \"x\"\n}\nh: 4\n"


def test_gpu_topology_needs_a_captured_target(tmp_path):
  with pytest.raises(grid_lib.UserError, match="capture_gpu_target.py"):
    topologies.devices_for("gpu:1x8")
  with pytest.raises(grid_lib.UserError, match="gpu:NODESxGPUS_PER_NODE"):
    topologies.devices_for("gpu:8", "x.txtpb")
  bad = tmp_path / "t.txtpb"
  bad.write_text("platform_name: \"CUDA\"\n")
  with pytest.raises(grid_lib.UserError, match="no gpu_device_info"):
    topologies.read_gpu_target(str(bad))


def test_slurm_aot_check_without_a_target_submits_nothing(tmp_path):
  """Without a GPU description the check cannot compile: exit 2 with the one line that says how
  to capture one, before any script or sbatch."""
  p = subprocess.run([sys.executable, "-m", "launch.slurm", "--config=configs/datacons.py:scale=test",
                      f"--workdir={tmp_path / 'dc'}", "--gpus_per_node=8", "--aot_check"], cwd=REPO,
                     env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert p.returncode == 2, p.stdout + p.stderr
  # Where the CUDA plugin is installed its C++ loader logs a line or two of its own before.
  ours = [line for line in p.stderr.strip().splitlines() if not re.match(r"(WARNING: All log|[IWE]\d{4} )", line)]
  assert len(ours) == 1 and "capture_gpu_target.py" in ours[0], p.stderr
  assert not (tmp_path / "dc" / ".slurm").exists()


@needs_cuda_plugin
@pytest.mark.slow
def test_gpu_compile_from_the_captured_h200_description():
  """Two nodes of eight H200s, compiled on this CPU host from the description captured on a real
  H200: devices per host as on the nodes, memory reported and within the chip, no XLA FLOP count
  (CUDA gives none). A capture from a newer jax may hold fields this jaxlib does not know: only
  fields that are in the file are dropped, and the compile works without them."""
  devices, dropped = topologies.devices_for("gpu:2x8", str(H200_TARGET))
  assert len(devices) == 16 and topologies.host_count(devices) == 2
  assert devices[0].device_kind == "NVIDIA H200"
  text = H200_TARGET.read_text()
  assert all(re.search(rf"^\s*{name}\b", text, re.M) for name in dropped)
  row = aot.attempt(_small("mdm", **{"mesh.data": 2, "mesh.fsdp": 8}), devices)
  assert row["status"] == "ok", row.get("error")
  assert 0 < row["train"]["argument_bytes"] and 0 < row["peak_bytes"] <= row["hbm_bytes"]
  assert row["xla_flops_per_step"] is None and row["roofline"]["bound"] == "compute, flops.py"


@needs_cuda_plugin
@pytest.mark.slow
def test_slurm_aot_check_compiles_for_the_nodes_then_prints_the_job(tmp_path):
  p = subprocess.run([sys.executable, "-m", "launch.slurm", "--config=configs/datacons.py:scale=test",
                      f"--workdir={tmp_path / 'dc'}", "--nodes=2", "--gpus_per_node=4", "--aot_check",
                      f"--gpu_target_config={H200_TARGET}", "--dry_run"], cwd=REPO, env=subprocess_env(),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stdout + p.stderr
  rows = [line for line in p.stdout.splitlines() if line.startswith(("| ar ", "| mdm "))]
  assert len(rows) == 2 and all("| gpu:2x4 | fits |" in r for r in rows), p.stdout
  assert "#SBATCH --nodes=2" in p.stdout and not (tmp_path / "dc" / ".slurm").exists()
