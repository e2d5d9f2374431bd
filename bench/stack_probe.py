"""Does a vmapped stack of N runs raise the tiny models' train-step FLOP/s? (stacked runs)

  python -m bench.stack_probe [--config=configs/quickstart.py] [--stacks=1,4,8] [--steps=20]
      [--objectives=ar,mdm] [--matmuls] [--profile=DIR] [--set KEY=VALUE ...]

For the first grid point of each objective, times the trainer's compiled train step
(dlmscale/train/steps.py) and the same step under jax.vmap over a leading run axis of N (params,
optimizer state, run args, batches) in this process, in wall and CPU seconds, against a float32
matmul chain timed in the same process; each stack's one-step loss is checked against the plain
step's. --matmuls times the step's matmul shapes alone; --profile traces the plain step and sums
its op time by kind. With XLA_FLAGS=--xla_force_host_platform_device_count=2 each batch is split
over two CPU devices, as the trainer does on a 2-core machine. Random tokens: only shapes matter.
One JSON line per result. Figures and conclusions: BENCHMARKS.md, "Grid throughput".
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.grid_bench import measure_peak
from configs import grid as grid_lib
from dlmscale import config_file
from dlmscale.model import flops
from dlmscale.train import steps as program
from dlmscale.runtime import sharding
from dlmscale.runtime import xla_options


def _time(fn, state, tokens, args, n_steps: int) -> tuple[float, float, object]:
  """(best wall s, best CPU s of this process) per call, and the state after."""
  state, m = fn(state, tokens, args)  # warm
  jax.block_until_ready(m)
  best, best_cpu = float("inf"), float("inf")
  for _ in range(3):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
      state, m = fn(state, tokens, args)
    jax.block_until_ready(m)
    best = min(best, (time.perf_counter() - t0) / n_steps)
    best_cpu = min(best_cpu, (time.process_time() - c0) / n_steps)
  return best, best_cpu, state


def stacked_programs(progs, mesh, opts):
  """(init over N keys, train step over N runs), laid out as the trainer lays out one run: the
  state replicated, each run's batch split over the mesh's batch axes like the plain step's."""
  repl = sharding.replicated(mesh)
  tokens_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *progs.batch_sharding.spec))
  init = jax.jit(jax.vmap(progs.jit_init.__wrapped__), out_shardings=repl)
  step = jax.jit(jax.vmap(progs.train_step.__wrapped__),  # the step before jit: (state, tokens_BxL, run_args)
                 in_shardings=(repl, tokens_sh, repl), out_shardings=(repl, repl), donate_argnums=0,
                 compiler_options=opts)
  return init, step, tokens_sh


def same_run_diff(progs, vinit, vstep, n: int, tokens_BxL: jax.Array, args: dict) -> float:
  """Largest |loss difference| after one step between the plain step and every member of a
  stack of n copies of the same run: the stack must compute the same thing it is timed against."""
  _, m1 = progs.train_step(progs.jit_init(jax.random.key(0)), tokens_BxL, args)
  states = vinit(jnp.stack([jax.random.key(0)] * n))
  stack = lambda x: jnp.stack([jnp.asarray(x)] * n)
  _, mN = vstep(states, stack(tokens_BxL), jax.tree.map(stack, args))
  return float(jnp.max(jnp.abs(mN["loss"] - m1["loss"])))


def probe(config, stacks: list[int], n_steps: int, peak: float, peak_cpu: float, xla: str) -> dict:
  vocab = config.data.vocab_size
  mesh = sharding.make_mesh(config.mesh)
  opts = xla_options.for_backend(jax.default_backend()) if xla == "auto" else None
  progs = program._build_programs(config, vocab, vocab - 1, mesh, opts)
  B, L = config.batch_size, config.data.seq_len
  f_step = flops.train_flops_per_step(progs.model_cfg, L, B)
  rng = np.random.default_rng(0)
  out = {"objective": config.objective, "model_size": config.model_size, "flops_per_step": f_step}
  total = 200
  args1 = program.run_args(config, total)
  with jax.set_mesh(mesh):
    # N = 1, the program the trainer runs today
    state = progs.jit_init(jax.random.key(0))
    tok = jax.device_put(rng.integers(0, vocab - 1, (B, L)).astype(np.int32), progs.batch_sharding)
    t0 = time.perf_counter()
    progs.train_step.lower(state, tok, args1).compile()
    out["compile_s_plain"] = time.perf_counter() - t0
    s, c, state = _time(progs.train_step, state, tok, args1, n_steps)
    out["plain"] = {"s_per_step": s, "cpu_s_per_step": c, "gflops": f_step / s / 1e9,
                    "frac_peak": f_step / s / peak, "frac_peak_cpu": f_step / c / peak_cpu}
    out["devices"] = mesh.devices.size
    for n in stacks:
      vinit, vstep, tokens_sh = stacked_programs(progs, mesh, opts)
      states = vinit(jax.random.split(jax.random.key(0), n))
      toks = jax.device_put(rng.integers(0, vocab - 1, (n, B, L)).astype(np.int32), tokens_sh)
      argsN = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * n), args1)
      t0 = time.perf_counter()
      vstep.lower(states, toks, argsN).compile()
      c = time.perf_counter() - t0
      diff = same_run_diff(progs, vinit, vstep, n, tok, args1)
      s, cs, states = _time(vstep, states, toks, argsN, max(2, n_steps // n))
      out[f"stack{n}"] = {"s_per_step": s, "s_per_run_step": s / n, "cpu_s_per_run_step": cs / n,
                         "gflops": n * f_step / s / 1e9, "frac_peak": n * f_step / s / peak,
                         "frac_peak_cpu": n * f_step / cs / peak_cpu, "compile_s": c,
                         "loss_diff_vs_plain": diff}
  return out


def _cpu_s_per_call(fn, *host_args: np.ndarray) -> float:
  """Best CPU seconds of this process per call of jit(fn), over 5 rounds of 20 calls."""
  args = [jnp.asarray(x, jnp.float32) for x in host_args]
  f = jax.jit(fn)
  f(*args).block_until_ready()
  best = float("inf")
  for _ in range(5):
    c0 = time.process_time()
    for _ in range(20):
      r = f(*args)
    r.block_until_ready()
    best = min(best, (time.process_time() - c0) / 20)
  return best


def narrow_matmuls(config, peak: float) -> dict:
  """FLOPs per CPU-second of the step's matmul shapes alone, as a fraction of the matmul chain's
  (peak: its FLOPs per CPU-second): what a step of this width could reach if nothing else cost."""
  from dlmscale.model import sizes  # noqa: PLC0415
  D, F = sizes.LADDER[config.model_size].d_model, sizes.LADDER[config.model_size].d_ff
  M, V, L = config.batch_size * config.data.seq_len, config.data.vocab_size, config.data.seq_len
  out = {}
  rng = np.random.default_rng(0)
  H = sizes.LADDER[config.model_size].n_heads
  BH, Dh = config.batch_size * H, D // H
  for name, (a_shape, b_shape, fl) in {"attention QK^T": ((BH, L, Dh), (BH, Dh, L), 2 * BH * L * L * Dh),
                                       "attention PV": ((BH, L, L), (BH, L, Dh), 2 * BH * L * L * Dh)}.items():
    out[name] = round(fl / _cpu_s_per_call(jnp.matmul, rng.standard_normal(a_shape),
                                           rng.standard_normal(b_shape)) / peak, 3)
  for name, (m, k, n) in {"MxDx3D": (M, D, 3 * D), "MxDxD": (M, D, D), "MxDxF": (M, D, F),
                          "MxFxD": (M, F, D), "MxDxV": (M, D, V), "DxMxD (grad)": (D, M, D)}.items():
    out[name] = round(2 * m * k * n / _cpu_s_per_call(jnp.matmul, rng.standard_normal((m, k)),
                                                     rng.standard_normal((k, n))) / peak, 3)
  return out


_CATEGORIES = (("matmul", ("ynn_fusion", "dot")), ("all-reduce", ("all-reduce",)),
               ("reduce-window", ("reduce-window",)), ("select/compare", ("select",)),
               ("transpose/copy", ("transpose", "copy")), ("loop fusion", ("fusion",)))
_NOT_OPS = ("ThunkExecutor", "PjitFunction", "CommonPjRt", "Wait", "$", "Rendezvous")


def op_breakdown(trace_dir: str, calls: int) -> dict:
  """Per-call milliseconds of XLA CPU op time by kind, from a jax.profiler perfetto trace (all
  devices' threads summed; the all-reduce includes waiting for the other device)."""
  import collections, glob, gzip  # noqa: E401, PLC0415
  (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
  events = json.load(gzip.open(path))
  events = events["traceEvents"] if isinstance(events, dict) else events
  ms = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or name.startswith(_NOT_OPS):
      continue
    kind = next((k for k, keys in _CATEGORIES if any(x in name for x in keys)), "other")
    ms[kind] += e["dur"] / 1e3 / calls
  return {k: round(v, 1) for k, v in ms.most_common()}


def profile(config, trace_dir: str, xla: str, calls: int = 5) -> dict:
  """The plain train step's op time by kind (jax.profiler trace of `calls` steps)."""
  vocab = config.data.vocab_size
  mesh = sharding.make_mesh(config.mesh)
  opts = xla_options.for_backend(jax.default_backend()) if xla == "auto" else None
  progs = program._build_programs(config, vocab, vocab - 1, mesh, opts)
  args = program.run_args(config, 200)
  tokens = np.random.default_rng(0).integers(0, vocab - 1, (config.batch_size, config.data.seq_len))
  with jax.set_mesh(mesh):
    state = progs.jit_init(jax.random.key(0))
    tok = jax.device_put(tokens.astype(np.int32), progs.batch_sharding)
    for _ in range(3):
      state, m = progs.train_step(state, tok, args)
    jax.block_until_ready(m)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(calls):
        state, m = progs.train_step(state, tok, args)
      jax.block_until_ready(m)
  return {"objective": config.objective, "devices": mesh.devices.size,
          "op_ms_per_step": op_breakdown(trace_dir, calls)}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--config", default="configs/quickstart.py")
  p.add_argument("--stacks", default="1,4,8")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--objectives", default="ar,mdm")
  p.add_argument("--xla", default="auto", help="compiler options: auto (the trainer's) or none")
  p.add_argument("--set", action="append", default=[], help="KEY=VALUE config override (tests)")
  p.add_argument("--peak_n", type=int, default=2048)
  p.add_argument("--matmuls", action="store_true", help="also time the step's matmul shapes alone")
  p.add_argument("--profile", default="", help="also trace the plain step into this directory and "
                 "print its op time by kind")
  a = p.parse_args(argv)
  path, arg = config_file.split_spec(a.config)
  mod = config_file.load_module(path)
  pts = mod.sweep(arg)
  peak0, peak_cpu = measure_peak(a.peak_n)
  extra = {k: json.loads(v) if v[:1] in "0123456789[{" else v for k, v in (x.split("=", 1) for x in a.set)}
  configs = {}  # objective -> the config of its first point
  for pt in pts:
    configs.setdefault(pt["objective"], grid_lib.apply_overrides(mod.get_config(arg), {**pt, **extra}))
  stacks = [int(x) for x in a.stacks.split(",") if x]
  rows = [probe(cfg, stacks, a.steps, peak0, peak_cpu, a.xla)
          for obj, cfg in configs.items() if obj in a.objectives.split(",")]
  if a.profile:
    rows += [profile(cfg, f"{a.profile}/{obj}", a.xla) for obj, cfg in configs.items()
             if obj in a.objectives.split(",")]
  if a.matmuls:
    rows.append({"narrow_matmuls_frac_peak_cpu": narrow_matmuls(next(iter(configs.values())), peak_cpu)})
  peak1, _ = measure_peak(a.peak_n)
  for r in rows:
    print(json.dumps({**r, "peak_gflops": [peak0 / 1e9, peak1 / 1e9], "peak_gflops_per_cpu_s": peak_cpu / 1e9,
                      "cpus": len(os.sched_getaffinity(0)), "load": os.getloadavg()}))


if __name__ == "__main__":
  main()
