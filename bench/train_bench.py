"""Train-step throughput and MFU for named model sizes, on whatever backend JAX finds.

It compiles the real train step (dlmscale.train.steps.build, the one train.py runs), drives it the way
train.py's loop does (a host batch put on the device every step, the loss fetched one step late),
and prints tokens/s, step time, model FLOPs per step (dlmscale.model.flops) and MFU, as one JSON line per
configuration plus a table. `--impl plain` times bench/plain_step.py at the same shapes instead: the
bare-JAX speed the real step should match.

The MFU denominator: on CPU the measured throughput of a large float32 matmul, re-measured before
and after every timed repetition in the same process, so each repetition is divided by what the
machine could do at that moment (other processes share the cores); on GPU/TPU the datasheet dense
bf16 peak (dlmscale/runtime/hardware.py) times the device count, with the measured matmul printed beside it.
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
  xla_options: str = "auto"  # auto = dlmscale/runtime/xla_options.py (as train.py); none; or "KEY=VALUE,..."
  cpu_devices: str = "auto"  # auto = dlmscale/runtime/cpu_devices.py (as dlmscale.main), or a count
  loss_chunk: int = 0  # model.loss_chunk: positions per chunk of the memory-lean loss (0 = full logits)
  micro_batch: int = 0  # micro_batch_size: gradient accumulation (0 = off)


def _split(values: list[str]) -> list[str]:
  return [v for item in values for v in item.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", action="append", default=[],
                 help=f"ladder name(s), repeatable or comma list (default {','.join(QUICKSTART_SIZES)})")
  p.add_argument("--objective", default="ar,mdm", help="ar, mdm or ar,mdm")
  p.add_argument("--impl", default="real", help="real (dlmscale.train.steps.build), plain, or real,plain")
  for name, default in (("batch", 32), ("seq_len", 128), ("vocab", 2048), ("steps", 3),
                        ("warmup", 2), ("reps", 5), ("peak_n", 2048)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (compute)")
  p.add_argument("--remat", default="none", help="none | full | dots")
  p.add_argument("--loss_chunk", type=int, default=0, help="model.loss_chunk (0 = full logits)")
  p.add_argument("--micro_batch", type=int, default=0, help="micro_batch_size (0 = no accumulation)")
  p.add_argument("--attention", default="auto", help="auto | xla | cudnn")
  p.add_argument("--xla_options", action="append", default=[],
                 help="auto (the trainer's, from dlmscale/runtime/xla_options.py), none (XLA's defaults) "
                      "or KEY=VALUE[,KEY=VALUE]; repeatable, each one a variant timed beside the "
                      "others, e.g. --xla_options none --xla_options auto")
  p.add_argument("--cpu_devices", default="auto",
                 help="auto (one per core, as dlmscale.main: dlmscale/runtime/cpu_devices.py) or a count; "
                      "1 = one device using every core through XLA's intra-op threads")
  p.add_argument("--json_out", default="", help="append the JSON lines to this file")
  p.add_argument("--interleave", action="store_true",
                 help="build every configuration in one process and time them round-robin: the "
                      "fairest A/B (e.g. AR vs MDM) on a busy machine; RSS is then shared")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def specs_from(args: argparse.Namespace) -> list[Spec]:
  from dlmscale.model import sizes
  from dlmscale.runtime import xla_options
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
  if args.cpu_devices != "auto" and not (args.cpu_devices.isdigit() and int(args.cpu_devices) > 0):
    raise UserError(f"--cpu_devices must be auto or a positive count, got {args.cpu_devices!r}")
  variants = args.xla_options or ["auto"]
  for v in variants:
    if v != "auto":
      xla_options.parse(v)  # a UserError naming the format
  return [Spec(size=s, objective=o, impl=i, batch=args.batch, seq_len=args.seq_len,
               vocab=args.vocab, steps=args.steps, warmup=args.warmup, reps=args.reps,
               dtype=args.dtype, remat=args.remat, attention=args.attention, peak_n=args.peak_n,
               xla_options=x, cpu_devices=args.cpu_devices, loss_chunk=args.loss_chunk,
               micro_batch=args.micro_batch)
          for s in names for o in objectives for i in impls for x in variants]


# ------------------------------------------------------------------------------------------------
# In the child: build, compile, time.


class MatmulPeak:
  """FLOP/s (wall and per CPU-second) of one n x n matmul, compiled once and re-timed: float32 on
  CPU (the MFU denominator there), bfloat16 and n >= 8192 on accelerators (printed beside the
  datasheet peak, which is the denominator there)."""

  def __init__(self, n: int):
    import jax
    import jax.numpy as jnp
    cpu = jax.default_backend() == "cpu"
    n = n if cpu else max(n, 8192)
    self.flops, dtype = 2.0 * n**3, jnp.float32 if cpu else jnp.bfloat16
    self.label = f"measured {jnp.dtype(dtype).name} matmul {n}^2"
    self.a = jnp.full((n, n), 1.0 / n, dtype)
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
    from dlmscale.model import sizes
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
  c.model.loss_chunk, c.micro_batch_size = spec.loss_chunk, spec.micro_batch
  return c


def _build(spec: Spec, config) -> tuple:
  """(jitted step, initial state, host batch -> device batch, mesh, ModelConfig, XLA options).

  real: dlmscale.train.steps.build and its setup.init / setup.train_step / put_batch, as train.py uses
  them. plain: bench/plain_step.py (float32) with the same calling convention. Both are compiled
  with the XLA options of spec.xla_options.
  """
  import jax
  from dlmscale.model import transformer as model_lib
  from dlmscale.train import steps as program
  from dlmscale.runtime import sharding
  from dlmscale.runtime import xla_options
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(spec.batch, mesh)
  options = (xla_options.for_backend(jax.default_backend()) if spec.xla_options == "auto"
             else xla_options.parse(spec.xla_options) or None)
  if spec.impl == "real":
    setup = program.build(config, spec.vocab, spec.vocab - 1, 1000, mesh, compiler_options=options)
    with jax.set_mesh(mesh):
      state = setup.init()
    return (setup.train_step, state, lambda x: program.put_batch(x, setup), mesh, setup.model_cfg,
            setup.compiler_options)
  from bench import plain_step
  c = program.model_config_from(config, spec.vocab)
  state = plain_step.init_state(jax.random.key(0), c.vocab_size, c.d_model, c.n_layers,
                                c.n_heads, c.d_ff)
  return (plain_step.make_step(spec.objective, compiler_options=options), state, jax.numpy.asarray,
          mesh, c, options)


class _Loop:
  """train.py's loop minus the data pipeline: put a host batch, step, fetch the previous loss."""

  def __init__(self, spec: Spec, config):
    import numpy as np
    self.spec, self.row, self.loss = spec, {}, float("nan")
    self.walls, self.cpus, self.peaks = [], [], []  # per repetition; peaks: (wall, cpu) FLOP/s
    self.step, self.state, self.put, self.mesh, self.model_cfg, self.compiler_options = _build(
        spec, config)
    self.step_devices = self.mesh.size if spec.impl == "real" else 1
    rng = np.random.default_rng(0)
    self.host = [rng.integers(0, spec.vocab - 1, (spec.batch, spec.seq_len), dtype=np.int32)
                 for _ in range(2)]

  def compile(self):
    """The compile the first step triggers (timed by the caller)."""
    import jax
    with jax.set_mesh(self.mesh):
      return self.step.lower(self.state, self.put(self.host[0])).compile()

  def run(self, n: int) -> float:
    import jax
    pending = None
    with jax.set_mesh(self.mesh):
      for i in range(n):
        self.state, metrics = self.step(self.state, self.put(self.host[i % 2]))
        if pending is not None:
          jax.device_get(pending)  # never more than one step in flight, as in train.py
        pending = metrics["loss"]
      return float(jax.device_get(pending))

  def state_mb(self) -> float:
    import jax
    return sum(x.nbytes for x in jax.tree.leaves(self.state)) / 2**20


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median(xs: list[float]) -> float:
  return float(statistics.median(xs))


def prepare(spec: Spec) -> _Loop:
  """Builds, compiles (timed) and warms up one configuration."""
  import jax
  from dlmscale.model import flops
  backend, device = jax.default_backend(), jax.devices()[0]
  load_avg = os.getloadavg()[0]
  dtype, attention = _resolve(spec, backend) if spec.impl == "real" else ("float32", "xla")
  loop = _Loop(spec, _config(spec, dtype, attention))
  model_cfg = loop.model_cfg
  t0 = time.perf_counter()
  compiled = loop.compile()
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
      # cost_analysis counts one device's partition of the SPMD program: times the devices it runs on.
      "xla_flops_per_step": float(cost.get("flops", float("nan"))) * loop.step_devices,
      "compile_s": compile_s,
      "temp_mb": getattr(mem, "temp_size_in_bytes", 0) / 2**20 if mem else None,
      "state_mb": loop.state_mb(), "compiler_options": loop.compiler_options,
  }
  loop.row, loop.loss = row, loop.run(spec.warmup)
  return loop


def time_rep(t: _Loop, meter: MatmulPeak) -> None:
  """One repetition: the matmul peak, `steps` steps (wall and CPU time), the peak again."""
  before = meter()
  w0, c0 = time.perf_counter(), time.process_time()
  t.loss = t.run(t.spec.steps)
  t.walls.append((time.perf_counter() - w0) / t.spec.steps)
  t.cpus.append((time.process_time() - c0) / t.spec.steps)
  after = meter()
  t.peaks.append((max(before[0], after[0]), max(before[1], after[1])))


def finish(t: _Loop, meter: MatmulPeak, rss_baseline: float) -> dict:
  """The JSON row: medians and bests over repetitions, MFU against the right peak, memory."""
  import jax
  from dlmscale.runtime import hardware
  device, f = jax.devices()[0], t.row["flops_per_step"]
  walls, cpus = t.walls, t.cpus
  mfus = [f / w / p for w, (p, _) in zip(walls, t.peaks)]
  mfus_cpu = [f / c / p for c, (_, p) in zip(cpus, t.peaks)]
  peaks = [p for p, _ in t.peaks]
  published = hardware.published_peak(device) if t.row["backend"] != "cpu" else None
  if published:
    denom, source = published * jax.device_count(), "datasheet bf16"
    mfu, mfu_best, mfu_cpu = f / _median(walls) / denom, f / min(walls) / denom, None
  else:
    denom, source = _median(peaks), meter.label
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


def set_cpu_devices(spec: Spec) -> None:
  """Before JAX starts its backends: the CPU device count dlmscale.main would pick, or the one asked."""
  import jax
  from configs import base
  from dlmscale.runtime import cpu_devices
  if spec.cpu_devices == "auto":
    c = base.get_config()
    c.batch_size = c.eval.batch_size = spec.batch
    cpu_devices.configure(c)
  elif not cpu_devices.user_chose():
    jax.config.update("jax_num_cpu_devices", int(spec.cpu_devices))


def measure(specs: list[Spec]) -> list[dict]:
  """Times configurations in this process, round-robin when there are several: ratios between them
  then survive changes in machine load that separate runs would see (but peak memory is shared)."""
  set_cpu_devices(specs[0])
  meter = MatmulPeak(specs[0].peak_n)
  rss_baseline = _rss_mb()
  loops = [prepare(s) for s in specs]
  for _ in range(max(s.reps for s in specs)):
    for t in loops:
      time_rep(t, meter)
  return [{**finish(t, meter, rss_baseline), "interleaved": len(loops) > 1} for t in loops]


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


HEADER = ("size", "obj", "impl", "BxL", "devices", "dtype", "remat", "GFLOP/step", "step ms med/best",
          "tok/s", "MFU med/best", "MFU cpu", "peak GF/s", "RSS MB")


def table(rows: list[dict]) -> str:
  """A markdown table, then step-cost ratios: MDM/AR, real/plain, XLA-option variant/none.

  The cost of a step is its time x the matmul peak measured around it (= model FLOPs / MFU), so a
  ratio between two configurations holds even when other processes slowed one of them down.
  """
  variants = len({r.get("xla_options", "auto") for r in rows}) > 1
  header = HEADER + (("xla options",) if variants else ())
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    mfu_cpu = f"{100 * r['mfu_cpu']:.1f}%" if r.get("mfu_cpu") is not None else "-"
    cells = (r["size"], r["objective"], r["impl"], f"{r['batch']}x{r['seq_len']}", r["n_devices"],
             r["dtype"],
             r["remat"], f"{r['flops_per_step'] / 1e9:.2f}",
             f"{1e3 * r['step_s']:.1f} / {1e3 * r['step_s_best']:.1f}", f"{r['tokens_per_s']:,.0f}",
             f"{100 * r['mfu']:.1f}% / {100 * r['mfu_best']:.1f}%", mfu_cpu,
             f"{r['matmul_peak_measured'] / 1e9:.0f}", f"{r['peak_rss_mb']:.0f}")
    cells += ((r.get("xla_options", "auto"),) if variants else ())
    lines.append("| " + " | ".join(map(str, cells)) + " |")
  key = lambda r, **kw: tuple({"xla_options": "auto", **r, **kw}.get(k, "") for k in (  # noqa: E731
      "size", "impl", "objective", "remat", "xla_options"))
  by_key = {key(r): r for r in rows}
  cost = lambda x: x["flops_per_step"] / x["mfu"]  # noqa: E731

  def note(what: str, a: dict, b: dict | None) -> None:
    if b is not None and a is not b:
      notes.append(f"{what}: step cost {cost(a) / cost(b):.3f} (CPU seconds "
                   f"{a['step_cpu_s'] / b['step_cpu_s']:.3f}, raw wall time {a['step_s'] / b['step_s']:.3f})")

  notes = []
  for r in rows:
    option = r.get("xla_options", "auto")
    name = f"{r['size']} {r['impl']}" + (f" [xla_options {option}]" if variants else "")
    if r["objective"] == "mdm":
      note(f"{name} MDM/AR", r, by_key.get(key(r, objective="ar")))
    if r["impl"] == "real":
      note(f"{name} {r['objective']} real/plain", r, by_key.get(key(r, impl="plain")))
    if option != "none":
      note(f"{name} {r['objective']} vs xla_options none", r, by_key.get(key(r, xla_options="none")))
  return "\n".join(lines + ([""] + notes if notes else []))


def _emit(row: dict, json_out: str) -> None:
  print(json.dumps(row), flush=True)
  if json_out:
    with open(json_out, "a") as f:
      f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.child:
    print(json.dumps(measure([Spec(**json.loads(args.child))])[0]), flush=True)
    return 0
  specs, rows = specs_from(args), []
  if args.interleave:
    rows = measure(specs)
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
  from dlmscale.commands.guard import cli_main
  sys.exit(cli_main(main))
