"""Train-step throughput and MFU for named model sizes, on whatever backend JAX finds.

It compiles the real train step (dlmscale.steps.build, the one train.py runs), drives it the way
train.py's loop does (a host batch put on the device every step, the loss fetched one step late),
and prints tokens/s, step time, model FLOPs per step (dlmscale.flops) and MFU, as one JSON line per
configuration plus a table. `--impl plain` times bench/plain_step.py at the same shapes instead: the
bare-JAX speed the real step should match.

The MFU denominator: on CPU the measured throughput of a large float32 matmul, re-measured before
and after every timed repetition in the same process, so each repetition is divided by what the
machine could do at that moment (other processes share the cores); on GPU/TPU the datasheet dense
bf16 peak (dlmscale/hardware.py) times the device count, with the measured matmul printed beside it.
`mfu_cpu` divides CPU seconds instead of wall seconds (FLOPs per CPU-second of the step over FLOPs
per CPU-second of the matmul): it barely moves when other processes steal the cores.

Each configuration runs in a fresh subprocess by default, so peak memory (max RSS on CPU, the
allocator's peak bytes on an accelerator) belongs to that configuration alone.

  python -m bench.train_bench --size s1M,s10M --objective ar,mdm --batch 32 --seq_len 128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART_SIZES = ("s0.1M", "s0.4M", "s1M", "s3M", "s10M")
IMPLS = ("real", "plain")


@dataclasses.dataclass(frozen=True)
class Spec:
  """One configuration to time; JSON round-trips it to the child process."""
  size: str
  objective: str
  impl: str = "real"
  batch: int = 32
  seq_len: int = 128
  vocab: int = 2048
  steps: int = 3  # timed steps per repetition
  warmup: int = 2
  reps: int = 5
  dtype: str = "auto"  # auto = float32 on CPU, bfloat16 on accelerators (fp32 master weights)
  remat: str = "none"
  attention: str = "auto"  # auto = cudnn on GPU where it applies, else xla
  peak_n: int = 2048  # side of the square matmul that measures the CPU peak


def _split(values: list[str]) -> list[str]:
  return [v for item in values for v in item.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", action="append", default=[],
                 help=f"ladder name(s), repeatable or comma list (default {','.join(QUICKSTART_SIZES)})")
  p.add_argument("--objective", default="ar,mdm", help="ar, mdm or ar,mdm")
  p.add_argument("--impl", default="real", help="real (dlmscale.steps.build), plain, or real,plain")
  for name, default in (("batch", 32), ("seq_len", 128), ("vocab", 2048), ("steps", 3),
                        ("warmup", 2), ("reps", 5), ("peak_n", 2048)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (compute)")
  p.add_argument("--remat", default="none", help="none | full | dots")
  p.add_argument("--attention", default="auto", help="auto | xla | cudnn")
  p.add_argument("--json_out", default="", help="append the JSON lines to this file")
  p.add_argument("--interleave", action="store_true",
                 help="build every configuration in one process and time them round-robin: the "
                      "fairest A/B (e.g. AR vs MDM) on a busy machine; RSS is then shared")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def specs_from(args: argparse.Namespace) -> list[Spec]:
  from dlmscale import sizes
  from dlmscale.errors import UserError
  names = _split(args.size) or list(QUICKSTART_SIZES)
  for name in names:
    if name not in sizes.LADDER:
      raise UserError(f"unknown --size {name!r}; choose from {', '.join(sizes.LADDER)}")
  objectives, impls = _split([args.objective]), _split([args.impl])
  if not objectives or set(objectives) - {"ar", "mdm"}:
    raise UserError(f"--objective must be ar, mdm or ar,mdm; got {args.objective!r}")
  if not impls or set(impls) - set(IMPLS):
    raise UserError(f"--impl must be real, plain or real,plain; got {args.impl!r}")
  for name in ("batch", "seq_len", "steps", "reps", "peak_n"):
    if getattr(args, name) < 1:
      raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
  if args.vocab < 3 or args.warmup < 1:
    raise UserError("--vocab must be at least 3 and --warmup at least 1 (the compile step)")
  return [Spec(size=s, objective=o, impl=i, batch=args.batch, seq_len=args.seq_len,
               vocab=args.vocab, steps=args.steps, warmup=args.warmup, reps=args.reps,
               dtype=args.dtype, remat=args.remat, attention=args.attention, peak_n=args.peak_n)
          for s in names for o in objectives for i in impls]


# ------------------------------------------------------------------------------------------------
# In the child: build, compile, time.


class MatmulPeak:
  """FLOP/s (wall and per CPU-second) of one n x n float32 matmul, compiled once and re-timed."""

  def __init__(self, n: int):
    import jax
    import jax.numpy as jnp
    self.flops = 2.0 * n**3
    self.a = jnp.full((n, n), 1.0 / n, jnp.float32)
    self.f = jax.jit(lambda x: x @ self.a)
    self.f(self.a).block_until_ready()

  def __call__(self, repeats: int = 3) -> tuple[float, float]:
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
      w0, c0 = time.perf_counter(), time.process_time()
      self.f(self.a).block_until_ready()
      wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return self.flops / wall, self.flops / max(cpu, 1e-9)


def _resolve(spec: Spec, backend: str) -> tuple[str, str]:
  """auto dtype/attention: bf16 compute and cuDNN attention on accelerators, float32/xla on CPU."""
  dtype = spec.dtype if spec.dtype != "auto" else ("float32" if backend == "cpu" else "bfloat16")
  attention = spec.attention
  if attention == "auto":
    from dlmscale import sizes
    s = sizes.shape(spec.size)
    head_dim = s.d_model // s.n_heads
    fits = dtype != "float32" and head_dim % 8 == 0 and head_dim <= 128
    attention = "cudnn" if backend == "gpu" and fits else "xla"
  return dtype, attention


def _config(spec: Spec, dtype: str, attention: str):
  from configs import base
  c = base.get_config()
  c.objective, c.model_size, c.batch_size = spec.objective, spec.size, spec.batch
  c.data.seq_len, c.data.vocab_size = spec.seq_len, spec.vocab
  c.model.dtype, c.model.remat, c.model.attention = dtype, spec.remat, attention
  return c


def _real_step(spec: Spec, config) -> tuple[Callable, Callable, object, dict]:
  """(run(n) -> last loss, compile() -> compiled, model_cfg, state info) for dlmscale.steps.build."""
  import jax
  from dlmscale import sharding, steps
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(spec.batch, mesh)
  setup = steps.build(config, spec.vocab, spec.vocab - 1, 1000, mesh)
  rng = __import__("numpy").random.default_rng(0)
  host = [rng.integers(0, spec.vocab - 1, (spec.batch, spec.seq_len), dtype="int32") for _ in range(2)]
  with jax.set_mesh(mesh):
    box = {"state": setup.init()}

  def compile_():
    with jax.set_mesh(mesh):
      return setup.train_step.lower(box["state"], steps.put_batch(host[0], setup)).compile()

  def run(n: int) -> float:
    """train.py's loop minus the data pipeline: put, step, fetch the previous step's metrics."""
    pending, loss = None, float("nan")
    with jax.set_mesh(mesh):
      for i in range(n):
        box["state"], metrics = setup.train_step(box["state"], steps.put_batch(host[i % 2], setup))
        if pending is not None:
          loss = float(jax.device_get(pending["loss"]))
        pending = metrics
      loss = float(jax.device_get(pending["loss"]))
    return loss

  state_bytes = sum(x.nbytes for x in jax.tree.leaves(box["state"]))
  return run, compile_, setup.model_cfg, {"state_mb": state_bytes / 2**20}


def _plain_step(spec: Spec, model_cfg) -> tuple[Callable, Callable, dict]:
  """The same loop around bench/plain_step.py (float32 whatever --dtype says)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bench import plain_step
  c = model_cfg
  p = plain_step.init(jax.random.key(0), c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_ff)
  zeros = lambda: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
  box = {"state": (p, zeros(), zeros(), jnp.zeros((), jnp.int32))}
  step = plain_step.make_step(spec.objective)
  rng = np.random.default_rng(0)
  host = [rng.integers(0, spec.vocab - 1, (spec.batch, spec.seq_len), dtype="int32") for _ in range(2)]

  def run(n: int) -> float:
    pending, loss = None, float("nan")
    for i in range(n):
      *state, out = step(*box["state"], jnp.asarray(host[i % 2]))
      box["state"] = tuple(state)
      if pending is not None:
        loss = float(pending)
      pending = out
    return float(pending) if n else loss

  compile_ = lambda: step.lower(*box["state"], jnp.asarray(host[0])).compile()  # noqa: E731
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(box["state"]))
  return run, compile_, {"state_mb": state_bytes / 2**20}


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median(xs: list[float]) -> float:
  return float(statistics.median(xs))


@dataclasses.dataclass
class _Timing:
  """One compiled configuration and what its timed repetitions measured so far."""
  spec: Spec
  run: Callable[[int], float]
  model_flops: float
  row: dict  # the fields known before timing
  walls: list[float] = dataclasses.field(default_factory=list)
  cpus: list[float] = dataclasses.field(default_factory=list)
  peaks: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (wall, cpu) FLOP/s
  loss: float = float("nan")


def prepare(spec: Spec) -> _Timing:
  """Builds, compiles (timed) and warms up one configuration."""
  import jax
  from dlmscale import flops, model as model_lib
  backend, device = jax.default_backend(), jax.devices()[0]
  load_avg = os.getloadavg()[0]
  dtype, attention = _resolve(spec, backend)
  if spec.impl == "plain":
    dtype, attention = "float32", "xla"
  config = _config(spec, dtype, attention)
  if spec.impl == "real":
    run, compile_, model_cfg, info = _real_step(spec, config)
  else:
    model_cfg = model_lib.model_config_from(config, spec.vocab)
    run, compile_, info = _plain_step(spec, model_cfg)
  t0 = time.perf_counter()
  compiled = compile_()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  mem = compiled.memory_analysis()
  counts = flops.param_counts(model_cfg)
  row = {
      **dataclasses.asdict(spec), "dtype": dtype, "attention": attention,
      "backend": backend, "device_kind": device.device_kind, "n_devices": jax.device_count(),
      "n_cpus": os.cpu_count(), "load_avg_1m": load_avg, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "d_model": model_cfg.d_model, "n_layers": model_cfg.n_layers,
      "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
      "flops_per_step": flops.train_flops_per_step(model_cfg, spec.seq_len, spec.batch),
      "xla_flops_per_step": float(cost.get("flops", float("nan"))), "compile_s": compile_s,
      "temp_mb": getattr(mem, "temp_size_in_bytes", 0) / 2**20 if mem else None, **info,
  }
  timing = _Timing(spec, run, row["flops_per_step"], row)
  timing.loss = run(spec.warmup)
  return timing


def time_rep(t: _Timing, meter: MatmulPeak) -> None:
  """One repetition: the matmul peak, `steps` steps (wall and CPU time), the peak again."""
  before = meter()
  w0, c0 = time.perf_counter(), time.process_time()
  t.loss = t.run(t.spec.steps)
  t.walls.append((time.perf_counter() - w0) / t.spec.steps)
  t.cpus.append((time.process_time() - c0) / t.spec.steps)
  after = meter()
  t.peaks.append((max(before[0], after[0]), max(before[1], after[1])))


def finish(t: _Timing, rss_baseline: float) -> dict:
  """The JSON row: medians and bests over repetitions, MFU against the right peak, memory."""
  import jax
  from dlmscale import hardware
  device, f = jax.devices()[0], t.model_flops
  walls, cpus = t.walls, t.cpus
  mfus = [f / w / p for w, (p, _) in zip(walls, t.peaks)]
  mfus_cpu = [f / c / p for c, (_, p) in zip(cpus, t.peaks)]
  peaks = [p for p, _ in t.peaks]
  published = hardware.published_peak(device) if t.row["backend"] != "cpu" else None
  if published:
    denom, source = published * jax.device_count(), "datasheet bf16"
    mfu, mfu_best, mfu_cpu = f / _median(walls) / denom, f / min(walls) / denom, None
  else:
    denom, source = _median(peaks), f"measured f32 matmul {t.spec.peak_n}^2"
    mfu, mfu_best, mfu_cpu = _median(mfus), max(mfus), _median(mfus_cpu)
  tokens = t.spec.batch * t.spec.seq_len
  row = {
      **t.row, "step_s": _median(walls), "step_s_best": min(walls), "step_cpu_s": _median(cpus),
      "cpu_util": _median(cpus) / _median(walls) / (os.cpu_count() or 1),
      "tokens_per_s": tokens / _median(walls), "tokens_per_s_best": tokens / min(walls),
      "mfu": mfu, "mfu_best": mfu_best, "mfu_cpu": mfu_cpu, "peak_flops": denom,
      "peak_source": source, "matmul_peak_measured": _median(peaks),
      "matmul_peak_measured_max": max(peaks), "loss": t.loss,
      "rss_baseline_mb": rss_baseline, "peak_rss_mb": _rss_mb(),
  }
  stats = device.memory_stats() if t.row["backend"] != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    row["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return row


def measure(spec: Spec) -> dict:
  """Times one configuration in this process; returns its JSON row."""
  meter = MatmulPeak(spec.peak_n)
  rss_baseline = _rss_mb()
  t = prepare(spec)
  for _ in range(spec.reps):
    time_rep(t, meter)
  return finish(t, rss_baseline)


def measure_interleaved(specs: list[Spec]) -> list[dict]:
  """All configurations in this process, timed round-robin: ratios between them survive changes
  in machine load that separate runs would see; peak memory is then the process's, not each one's."""
  meter = MatmulPeak(specs[0].peak_n)
  rss_baseline = _rss_mb()
  timings = [prepare(s) for s in specs]
  for _ in range(max(s.reps for s in specs)):
    for t in timings:
      time_rep(t, meter)
  return [{**finish(t, rss_baseline), "interleaved": True} for t in timings]


# ------------------------------------------------------------------------------------------------
# In the parent: one subprocess per configuration, then the table.


def run_child(spec: Spec) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-m", "bench.train_bench", "--child",
                         json.dumps(dataclasses.asdict(spec))],
                        cwd=REPO, env=env, capture_output=True, text=True)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode == 2 and "error:" in proc.stderr:
    from dlmscale.errors import UserError
    raise UserError(proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
  if proc.returncode or not lines:
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    raise RuntimeError(f"benchmark of {spec.size} {spec.objective} ({spec.impl}) failed "
                       f"(exit {proc.returncode}):\n{tail}")
  return json.loads(lines[-1])


HEADER = ("size", "obj", "impl", "BxL", "dtype", "remat", "GFLOP/step", "step ms med/best",
          "tok/s", "MFU med/best", "MFU cpu", "peak GF/s", "RSS MB")


def table(rows: list[dict]) -> str:
  """A markdown table, then MDM/AR and real/plain step-cost ratios wherever both were timed.

  The cost of a step is its time x the matmul peak measured around it (= model FLOPs / MFU), so a
  ratio between two configurations holds even when other processes slowed one of them down.
  """
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  for r in rows:
    mfu_cpu = f"{100 * r['mfu_cpu']:.1f}%" if r.get("mfu_cpu") is not None else "-"
    cells = (r["size"], r["objective"], r["impl"], f"{r['batch']}x{r['seq_len']}", r["dtype"],
             r["remat"], f"{r['flops_per_step'] / 1e9:.2f}",
             f"{1e3 * r['step_s']:.1f} / {1e3 * r['step_s_best']:.1f}", f"{r['tokens_per_s']:,.0f}",
             f"{100 * r['mfu']:.1f}% / {100 * r['mfu_best']:.1f}%", mfu_cpu,
             f"{r['matmul_peak_measured'] / 1e9:.0f}", f"{r['peak_rss_mb']:.0f}")
    lines.append("| " + " | ".join(map(str, cells)) + " |")
  by_key = {(r["size"], r["impl"], r["objective"], r["remat"]): r for r in rows}
  cost = lambda x: x["flops_per_step"] / x["mfu"]  # noqa: E731
  notes = []
  for (size, impl, obj, remat), r in by_key.items():
    ar, plain = by_key.get((size, impl, "ar", remat)), by_key.get((size, "plain", obj, remat))
    if obj == "mdm" and ar:
      notes.append(f"{size} {impl} remat={remat}: MDM/AR step cost {cost(r) / cost(ar):.3f} "
                   f"(CPU seconds {r['step_cpu_s'] / ar['step_cpu_s']:.3f}, "
                   f"raw wall time {r['step_s'] / ar['step_s']:.3f})")
    if impl == "real" and plain:
      notes.append(f"{size} {obj}: real/plain step cost {cost(r) / cost(plain):.3f} "
                   f"(CPU seconds {r['step_cpu_s'] / plain['step_cpu_s']:.3f})")
  return "\n".join(lines + ([""] + notes if notes else []))


def _emit(row: dict, json_out: str) -> None:
  print(json.dumps(row), flush=True)
  if json_out:
    with open(json_out, "a") as f:
      f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.child:
    print(json.dumps(measure(Spec(**json.loads(args.child)))), flush=True)
    return 0
  specs, rows = specs_from(args), []
  if args.interleave:
    rows = measure_interleaved(specs)
    for row in rows:
      _emit(row, args.json_out)
  else:
    for spec in specs:  # one fresh process each: its own peak memory, no leftovers
      rows.append(run_child(spec))
      _emit(rows[-1], args.json_out)
  print("\n" + table(rows))
  return 0


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  from dlmscale.errors import cli_main
  sys.exit(cli_main(main))
