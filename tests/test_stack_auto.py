"""--stack=auto (dlmscale/train/stack_fit.py): as many stack members as fit the device's memory.

The search finds the largest fitting stack in few compiles; a device made small with
DLMSCALE_DEVICE_MEMORY_BYTES splits the candidates into stacks that fit, and every member still
equals its solo run; ample memory keeps them in one stack; launch.local passes auto through."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest

from conftest import subprocess_env, tiny_config
from dlmscale import run_dir as rundir
from dlmscale.errors import UserError
from dlmscale.runtime import hardware
from dlmscale.train import stack_fit
from helpers.stack_grid import POINTS, REPO, assert_same_run, measured_needs, write_grid
from launch import grids as grid_lib
from launch import stacks


@pytest.mark.parametrize("shape", ["linear", "convex", "steps"])
def test_largest_is_the_largest_fit_in_few_compiles(shape):
  curve = {"linear": lambda s: 100 + 40 * s, "convex": lambda s: 100 + s * s,
           "steps": lambda s: 100 + 50 * (s // 7)}[shape]
  for n in (1, 2, 3, 8, 64):
    for limit in range(0, curve(n) + 60, 7):
      seen: dict[int, int] = {}
      got = stack_fit.largest(n, curve, limit, seen)
      fitting = [s for s in range(1, n + 1) if curve(s) <= limit]
      assert got == (max(fitting) if fitting else 1), (shape, n, limit)
      bound = 4 if shape == "linear" else 2 * math.ceil(math.log2(n)) + 3 if n > 1 else 1
      assert len(seen) <= bound, (shape, n, limit, sorted(seen))
  seen = {}
  assert stack_fit.largest(64, curve, 10**9, seen) == 64 and list(seen) == [64]  # all fit: one compile


def test_a_compiler_refusing_a_stack_counts_as_not_fitting(monkeypatch):
  config = tiny_config("unused", "unused")

  def refuse(setup, members, batch):
    raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                       "temporaries (16.73G) exceeds available HBM (15.75G)")
  monkeypatch.setattr(stack_fit.stack_program, "compiled_cost", refuse)
  assert stack_fit.need(None, config, 8) > 15.75 * 2**30
  monkeypatch.setattr(stack_fit.stack_program, "compiled_cost", lambda *a: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    stack_fit.need(None, config, 8)


def test_stack_values():
  assert stacks.stack_arg("auto") == stacks.stack_arg(" AUTO ") == "auto"
  assert stacks.stack_arg("3") == 3 and stacks.cap(3) == 3 and stacks.cap("auto") == stacks.AUTO_CAP
  for bad in ("0", "-2", "two", "2.5", ""):
    with pytest.raises(argparse.ArgumentTypeError, match="nor auto"):
      stacks.stack_arg(bad)


def test_launch_local_passes_auto_through(tmp_path):
  grid = argparse.Namespace(spec="g.py")
  assert "--stack=auto" in stacks.command(grid, tmp_path, ["a", "b"], [], tmp_path / "r.json", "auto")
  assert "--stack=2" in stacks.command(grid, tmp_path, ["a", "b"], [], tmp_path / "r.json", 8)


def test_device_memory_from_the_environment_or_the_host(monkeypatch):
  cpu = [argparse.Namespace(platform="cpu", device_kind="cpu")] * 2
  monkeypatch.setenv(hardware.MEMORY_ENV, "3e9")
  assert hardware.device_memory(cpu) == (3_000_000_000, hardware.MEMORY_ENV)
  monkeypatch.setenv(hardware.MEMORY_ENV, "lots")
  with pytest.raises(UserError, match="number of bytes per device"):
    hardware.device_memory(cpu)
  monkeypatch.delenv(hardware.MEMORY_ENV)
  memory, source = hardware.device_memory(cpu)
  assert 0 < memory <= hardware.host_available_bytes() // 2 + 1 and "2 CPU devices" in source
  gpu = argparse.Namespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3",
                           memory_stats=lambda: {"bytes_limit": 60 * 2**30})
  assert hardware.device_memory([gpu]) == (60 * 2**30, "memory_stats()['bytes_limit']")


def test_ample_memory_keeps_every_candidate_in_one_stack(tiny_corpus, data_cache, monkeypatch):
  configs = [tiny_config(tiny_corpus, data_cache, "mdm", run_name=p["run_name"],
                         **{k: v for k, v in p.items() if k != "run_name"}) for p in POINTS]
  monkeypatch.setenv(hardware.MEMORY_ENV, str(10**12))
  fit = stack_fit.choose(configs)
  assert (fit.size, fit.stacks, list(fit.tries)) == (3, 1, [3])  # one compile: all three fit
  assert fit.need_bytes <= fit.limit_bytes == int(stack_fit.FRACTION * 10**12)
  assert "--stack=auto: 3 of 3 per stack, 1 stack(s)" in fit.line()
  assert fit.record()["size"] == 3 and fit.record()["source"] == hardware.MEMORY_ENV


def test_memory_for_two_of_three_trains_two_stacks_in_one_process(tiny_corpus, data_cache, tmp_path,
                                                                  monkeypatch, capsys):
  """launch.train_stack --stack=auto in this process (so the needs measured here are its own):
  a stack of two, then one of one, each member its solo run."""
  from dlmscale.train import loop, open_run, stack
  from launch import train_stack
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, "ar", epochs=1.0)
  configs = grid_lib.load_points(spec).configs
  stack.start_jax(list(configs.values()))
  built = open_run.build(configs["a"], stack.make_mesh(configs["a"]))
  need = {s: stack_fit.need(built.setup, built.config, s) for s in (2, 3)}
  monkeypatch.setenv(hardware.MEMORY_ENV, str(int(need[2] / stack_fit.FRACTION) + 1))
  out = tmp_path / "out.json"
  assert train_stack.main([f"--config={spec}", f"--workdir={tmp_path / 'auto'}", "--stack=auto",
                           f"--result_json={out}"]) == 0
  printed = capsys.readouterr().out
  assert "--stack=auto: 2 of 3 per stack, 2 stack(s)" in printed
  assert "stack of 2: a, b" in printed and "stack of 1: c" in printed
  got = json.loads(out.read_text())
  assert [got[n]["stack_auto"]["size"] for n in "abc"] == [2, 2, 2] and got["c"]["stack"] == ["c"]
  for n, c in configs.items():
    loop.train_and_evaluate(c, tmp_path / "solo" / n)
    assert_same_run(tmp_path / "auto" / n, tmp_path / "solo" / n)


def _launch(spec: str, workdir, *extra: str, **env: str) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "launch.local", f"--config={spec}", f"--workdir={workdir}", "--parallel=1",
         "--noreport", "--poll_s=0.1", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(**env), cwd=REPO, timeout=600)


@pytest.mark.slow
def test_memory_for_two_of_three_trains_two_stacks_equal_to_the_solo_runs(tiny_corpus, data_cache, tmp_path):
  """The device's memory set so that exactly two members' measured need fits: launch.local hands
  all three to one stack process, which trains a stack of two, then one of one."""
  spec = write_grid(tmp_path / "grid.py", tiny_corpus, data_cache)
  names = [p["run_name"] for p in POINTS]
  need = measured_needs(spec, names)
  assert need[1] < need[2] < need[3]
  memory = int(need[2] / stack_fit.FRACTION) + 1  # 0.9 x memory holds two members, not three
  res = _launch(spec, tmp_path / "auto", "--stack=auto", DLMSCALE_DEVICE_MEMORY_BYTES=str(memory))
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  log = (tmp_path / "auto" / stacks.STACK_LOGS / "a.log").read_text()
  assert "--stack=auto: 2 of 3 per stack, 2 stack(s)" in log and "DLMSCALE_DEVICE_MEMORY_BYTES" in log
  assert "stack of 2: a, b" in log and "stack of 1: c" in log
  got = json.loads((tmp_path / "auto" / stacks.STACK_LOGS / "a.json").read_text())
  assert {n: o["stack"] for n, o in got.items()} == {"a": ["a", "b"], "b": ["a", "b"], "c": ["c"]}
  auto = got["a"]["stack_auto"]
  assert (auto["size"], auto["candidates"], auto["memory_bytes"]) == (2, 3, memory)
  assert auto["need_bytes"] == need[2] <= auto["limit_bytes"] < need[3]
  assert "--stack=auto" in rundir.launch_log(tmp_path / "auto" / "c").read_text()
  res = _launch(spec, tmp_path / "solo")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  for n in names:
    assert_same_run(tmp_path / "auto" / n, tmp_path / "solo" / n)


def test_grouping_caps_auto_candidates(tiny_corpus, data_cache, tmp_path):
  points = [{"run_name": f"p{i}", "seed": i} for i in range(stacks.AUTO_CAP + 2)]
  grid = grid_lib.load_points(write_grid(tmp_path / "grid.py", tiny_corpus, data_cache, points=points))
  got = stacks.groups(grid, list(grid.points), stacks.cap("auto"))
  assert [len(g) for g in got] == [stacks.AUTO_CAP, 2]
