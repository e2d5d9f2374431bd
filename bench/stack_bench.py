"""Throughput of stacked runs: the trainer's solo step vs its stack program, per model size.

  python -m bench.stack_bench --sizes=s0.4M,s1M,s3M --stacks=1,8,32,64 [--objective=mdm]
      [--batch=16] [--seq_len=128] [--vocab=4096] [--seconds=4] [--out=FILE.jsonl]
  python -m bench.stack_bench --summarise=DIR   # DIR/stack.jsonl + DIR/gpu_util.csv -> DIR/summary.json

For each size, stack 1 is the solo program (dlmscale/train/steps.py, as the trainer runs it) and
stack N the vmapped program of N runs differing in seed and lr (dlmscale/train/stack_program.py),
built and timed from a fresh start in this process on random tokens (only shapes matter). Each row:
start_to_first_step_s (build, init, compile and the first step), steps/s and run-steps/s (N x
steps/s) over --seconds of steady state, and aggregate MFU (N runs' FLOPs per second over the
device's peak, dlmscale/runtime/hardware.py: the datasheet on a GPU, a measured matmul on CPU).
bench/gpu_grid.sh runs it on a GPU with the utilisation sampled by nvidia-smi.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import time

import numpy as np


def _config(size: str, objective: str, batch: int, seq_len: int, seed: int, lr_mult: float):
  from configs import base  # noqa: PLC0415
  c = base.get_config()
  c.objective, c.model_size, c.seed, c.batch_size = objective, size, seed, batch
  c.data.seq_len = seq_len
  c.optim.lr = c.optim.lr * lr_mult
  return c


def measure(size: str, n: int, a: argparse.Namespace) -> dict:
  """One row: a fresh build of the solo (n == 1) or stacked program, timed."""
  import jax  # noqa: PLC0415
  from dlmscale.model import flops  # noqa: PLC0415
  from dlmscale.runtime import hardware, sharding  # noqa: PLC0415
  from dlmscale.train import stack_program, steps  # noqa: PLC0415
  t0 = time.perf_counter()
  configs = [_config(size, a.objective, a.batch, a.seq_len, i, 2.0 ** (i % 4 - 2)) for i in range(n)]
  mesh = sharding.make_mesh(configs[0].mesh)
  setups = [steps.build(c, a.vocab, a.vocab - 1, 1000, mesh) for c in configs]
  rng = np.random.default_rng(0)
  with jax.set_mesh(mesh):
    if n == 1:
      state, put = setups[0].init(), (lambda t: steps.put_batch(t, setups[0]))
      step = lambda s, t: setups[0].train_step(s, t)
      tokens = rng.integers(0, a.vocab - 1, (a.batch, a.seq_len))
    else:
      prog = stack_program.build(setups, [f"run{i}" for i in range(n)])
      state, put = prog.stack([s.init() for s in setups]), prog.put_tokens
      active = prog.replicate(np.ones(n, bool))
      step = lambda s, t: prog.step(s, t, prog.run_args, active)
      tokens = rng.integers(0, a.vocab - 1, (n, a.batch, a.seq_len))
    batch = put(tokens)
    state, m = step(state, batch)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    count, t1 = 0, time.perf_counter()
    while time.perf_counter() - t1 < a.seconds or count < 3:
      state, m = step(state, batch)
      count += 1
      if count % 8 == 0:
        jax.block_until_ready(m)
    jax.block_until_ready(m)
    dt = time.perf_counter() - t1
  f_step = flops.train_flops_per_step(setups[0].model_cfg, a.seq_len, a.batch)
  peak, source = hardware.peak_flops_per_device()
  return {"size": size, "objective": a.objective, "stack": n, "batch": a.batch, "seq_len": a.seq_len,
          "start_to_first_step_s": round(first, 3), "steps_per_s": round(count / dt, 3),
          "run_steps_per_s": round(n * count / dt, 3), "flops_per_run_step": f_step,
          "mfu": n * f_step * count / dt / peak if peak else None, "peak_source": source,
          "loss_finite": bool(np.all(np.isfinite(np.asarray(m["loss"])))),
          "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}


def summarise(out: pathlib.Path) -> dict:
  """stack.jsonl and gpu_util.csv (if any) -> summary.json: per size, run-steps/s over solo's, and
  the share of utilisation samples above 0 (busy) and their mean."""
  rows = [json.loads(l) for l in (out / "stack.jsonl").read_text().splitlines() if l.strip()]
  solo = {(r["size"], r["batch"]): r["run_steps_per_s"] for r in rows if r["stack"] == 1}
  for r in rows:
    base = solo.get((r["size"], r["batch"]))
    r["speedup_vs_solo"] = round(r["run_steps_per_s"] / base, 2) if base else None
  util = []
  if (out / "gpu_util.csv").exists():
    with open(out / "gpu_util.csv") as f:
      util = [float(row[1]) for row in csv.reader(f) if len(row) > 1 and row[1].strip().isdigit()]
  summary = {"rows": rows, "gpu_util_samples": len(util),
             "gpu_busy_frac": round(sum(u > 0 for u in util) / len(util), 3) if util else None,
             "gpu_util_mean": round(sum(util) / len(util), 1) if util else None}
  (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  return summary


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.stack_bench", description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="s0.4M,s1M,s3M")
  p.add_argument("--stacks", default="1,8,32,64")
  p.add_argument("--objective", default="mdm")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--vocab", type=int, default=4096)
  p.add_argument("--seconds", type=float, default=4.0, help="steady-state time per row")
  p.add_argument("--out", default="", help="append each JSON row to this file")
  p.add_argument("--summarise", default="", help="write DIR/summary.json from DIR's rows and samples")
  a = p.parse_args(argv)
  if a.summarise:
    print(json.dumps(summarise(pathlib.Path(a.summarise)))[:2000])
    return 0
  for size in a.sizes.split(","):
    for n in [int(x) for x in a.stacks.split(",") if x]:
      row = {**measure(size, n, a), "load": [round(x, 2) for x in os.getloadavg()]}
      line = json.dumps(row)
      print(line, flush=True)
      if a.out:
        with open(a.out, "a") as f:
          f.write(line + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
