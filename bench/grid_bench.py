"""A whole grid's throughput: training FLOPs per wall second against the machine's matmul peak.

  python -m bench.grid_bench [--config=configs/quickstart.py] [--parallel=1] [-- LAUNCHER_ARGS...]

Runs `python -m launch.local` on the grid into a fresh temporary directory (with --noreport), then
the analysis report over it, and prints one JSON line:

  wall_s            launcher + report, end to end
  train_flops       sum over runs of summary.json `flops` (steps x dlmscale/model/flops.py's count per step)
  peak_flops_per_s  a float32 matmul chain (dlmscale/runtime/hardware.py) timed in this process before and
                    after the grid; the larger of the two, so utilization is not flattered
  utilization       train_flops / wall_s / peak_flops_per_s
  phases_s          wall time by phase in slot-seconds (they add up to parallel x launcher time +
                    the report): data, compile, train, eval, checkpoint, other (summed over runs,
                    from each summary.json's `phases`), startup (everything outside the trainers:
                    process start, imports, JAX start-up, launcher), report
  cpu_s, utilization_cpu   CPU seconds the grid's processes used, and train_flops / cpu_s over the
                    matmul's FLOPs per CPU-second: on a shared machine other processes steal wall
                    time, and this ratio is what the grid would reach with the cores to itself
  load_before/after os.getloadavg(): the machine is shared, so every figure carries its load

`--branches` instead times a WSD grid (configs/wsd.py: per family one constant-rate trunk and a
cooldown branch per epoch count) against the grid it replaces (the same file with cosine=true: one
cosine run per epoch count), each launched the same way (no report), and prints one JSON line:
training tokens actually trained (a branch trains only its cooldown, from its start step), launcher
wall time, CPU seconds, and each E's final eval loss in both.

`--stack=N|auto` times the grid (default configs/lr_sweep.py) solo, then with launch.local
--stack=N|auto (points of one compiled shape trained as one vmapped program; auto: as many as fit
the device), and prints one JSON line: run-steps (steps summed over runs) per wall second and per
CPU second in each, their ratios, and the largest relative change of a run's final eval loss (a
stack member equals its solo run).

Prepared data comes from $DLMSCALE_CACHE as a user's second grid would find it (`--cold_data` uses
an empty cache, so the data phase includes preparing it). Any compile cache starts empty: the
launcher is given a fresh DLMSCALE_COMPILE_CACHE inside the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAINER_PHASES = ("data", "compile", "train", "eval", "checkpoint", "other")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m bench.grid_bench", description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/quickstart.py", help="grid file[:ARGS]")
  p.add_argument("--parallel", type=int, default=1, help="launch.local --parallel")
  p.add_argument("--only", default="", help="launch.local --only (a named subset of the grid)")
  p.add_argument("--peak_n", type=int, default=2048, help="side of the matmul that measures the peak")
  p.add_argument("--cold_data", action="store_true", help="prepare the data into an empty cache")
  p.add_argument("--keep", default="", help="keep the grid directory here instead of deleting it")
  p.add_argument("--json_out", default="", help="also append the JSON line to this file")
  p.add_argument("--branches", action="store_true",
                 help="WSD trunk + branches vs one cosine run per epoch count (--config: a configs/wsd.py grid)")
  p.add_argument("--stack", type=lambda v: "auto" if v == "auto" else int(v), default=0, metavar="N|auto",
                 help="the grid solo vs in stacks of this many, or as many as fit (launch.local --stack; "
                      f"--config: default {STACK_GRID})")
  p.add_argument("launcher_args", nargs="*", help="extra launch.local arguments (after --)")
  return p.parse_args(argv)


def measure_peak(n: int) -> tuple[float, float]:
  """(FLOP/s, FLOP per CPU-second) of the float32 matmul chain, best of 5 after a warm-up."""
  import jax  # noqa: PLC0415 - JAX only once the arguments are fine
  import jax.numpy as jnp  # noqa: PLC0415
  a = jnp.ones((n, n), jnp.float32) / n
  f = jax.jit(lambda x: x @ a @ a @ a @ a)
  f(a).block_until_ready()
  wall, cpu = float("inf"), float("inf")
  for _ in range(5):
    t0, c0 = time.perf_counter(), time.process_time()
    f(a).block_until_ready()
    wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
  flops = 4 * 2 * n**3
  return flops / wall, flops / cpu


def _children_cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _env(tmp: pathlib.Path, cold_data: bool) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
  env["DLMSCALE_COMPILE_CACHE"] = str(tmp / "compile_cache")
  if cold_data:
    env["DLMSCALE_CACHE"] = str(tmp / "data_cache")
  return env


def _timed(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> tuple[float, int]:
  t0 = time.perf_counter()
  with open(log, "w") as f:
    rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
  return time.perf_counter() - t0, rc


def collect(workdir: pathlib.Path) -> tuple[list[dict], dict]:
  """(every summary.json of the grid, the manifest)."""
  summaries = [json.loads(p.read_text()) for p in sorted(workdir.glob("*/summary.json"))]
  manifest = json.loads((workdir / "grid_manifest.json").read_text())
  return summaries, manifest


def breakdown(summaries: list[dict], launcher_s: float, report_s: float, parallel: int) -> dict:
  """Slot-seconds by phase: trainer phases summed over runs, the rest of the slots is start-up."""
  out = {k: 0.0 for k in TRAINER_PHASES}
  inside = 0.0
  for s in summaries:
    ph = s.get("phases") or {}
    for k in TRAINER_PHASES:
      out[k] += ph.get(k, 0.0)
    inside += ph.get("total", 0.0)
  out["startup"] = parallel * launcher_s - inside
  out["report"] = report_s
  return {k: round(v, 2) for k, v in out.items()}


BRANCHES_GRID = "configs/wsd.py:study=true,scale=cpu,sizes=s0.1M,unique=51200,epochs=1+2+4+8"


def trained(workdir: pathlib.Path) -> dict:
  """Tokens each finished run of a grid trained itself (a branch: from its start step) and its final
  eval loss, by run name."""
  from dlmscale import run_dir  # noqa: PLC0415
  out = {}
  for path in sorted(workdir.glob("*/summary.json")):
    s = json.loads(path.read_text())
    config = run_dir.read_record(run_dir.config_path(path.parent))
    start = int((config.get("branch") or {}).get("start_step") or 0)
    out[s["run_name"]] = {"tokens": (s["steps"] - start) * s["batch_size"] * s["seq_len"],
                          "steps": s["steps"] - start, "final_eval_loss": s["final_eval_loss"]}
  return out


def _launch(args: argparse.Namespace, mode: str, spec: str, extra: list[str]) -> dict | None:
  """One launch.local of `spec` (no report) into a fresh directory: what it trained, its wall and
  CPU seconds; None (said on stderr) when the launcher failed."""
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"grid_bench_{mode}_"))
  cpu0 = _children_cpu_s()
  launch = [sys.executable, "-m", "launch.local", f"--config={spec}", f"--workdir={tmp / 'grid'}",
            f"--parallel={args.parallel}", "--noreport", *([f"--only={args.only}"] if args.only else []),
            *extra, *args.launcher_args]
  wall, rc = _timed(launch, _env(tmp, args.cold_data), tmp / "launcher.log")
  if rc:
    print(f"error: the {mode} launcher exited with {rc}; see {tmp / 'launcher.log'}", file=sys.stderr)
    return None
  runs = trained(tmp / "grid")
  cpu = _children_cpu_s() - cpu0
  steps = sum(r["steps"] for r in runs.values())
  shutil.rmtree(tmp, ignore_errors=True)
  return {"runs": len(runs), "train_tokens": sum(r["tokens"] for r in runs.values()), "run_steps": steps,
          "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "run_steps_per_s": round(steps / wall, 3),
          "run_steps_per_cpu_s": round(steps / cpu, 3),
          "final_eval_loss": {n: round(r["final_eval_loss"], 6) for n, r in runs.items()}}


def _emit(row: dict, args: argparse.Namespace) -> int:
  row.update(load_after=[round(x, 2) for x in os.getloadavg()], host=os.uname().nodename)
  line = json.dumps(row)
  print(line, flush=True)
  if args.json_out:
    with open(args.json_out, "a") as f:
      f.write(line + "\n")
  return 0


STACK_GRID = "configs/lr_sweep.py"


def stacked(args: argparse.Namespace) -> int:
  """The grid solo (a worker per slot) and in stacks of --stack (launch.local --stack), one after the
  other: run-steps per wall and per CPU second, and how far each run's final eval loss moved."""
  config = args.config if args.config != "configs/quickstart.py" else STACK_GRID
  row: dict = {"bench": "grid_stack", "config": config, "only": args.only, "stack": args.stack,
               "parallel": args.parallel, "load_before": [round(x, 2) for x in os.getloadavg()]}
  for mode, extra in (("solo", []), ("stack", [f"--stack={args.stack}"])):
    row[mode] = _launch(args, mode, config, extra)
    if row[mode] is None:
      return 1
  solo, stack = row["solo"], row["stack"]
  row["wall_ratio"] = round(stack["wall_s"] / solo["wall_s"], 3)
  row["cpu_ratio"] = round(stack["cpu_s"] / solo["cpu_s"], 3)
  row["max_rel_loss_diff"] = max(abs(stack["final_eval_loss"][n] - v) / abs(v)
                                 for n, v in solo["final_eval_loss"].items())
  return _emit(row, args)


def branches(args: argparse.Namespace) -> int:
  """The WSD grid and its cosine counterpart, one after the other, each launched alone."""
  config = args.config if args.config != "configs/quickstart.py" else BRANCHES_GRID
  row: dict = {"bench": "grid_branches", "config": config, "parallel": args.parallel,
               "load_before": [round(x, 2) for x in os.getloadavg()]}
  for mode, spec in (("wsd", config), ("cosine", config + (",cosine=true" if ":" in config else ":cosine=true"))):
    row[mode] = _launch(args, mode, spec, [])
    if row[mode] is None:
      return 1
  row["tokens_ratio"] = row["wsd"]["train_tokens"] / row["cosine"]["train_tokens"]
  row["wall_ratio"] = row["wsd"]["wall_s"] / row["cosine"]["wall_s"]
  return _emit(row, args)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.branches:
    return branches(args)
  if args.stack:
    return stacked(args)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="grid_bench_"))
  workdir = tmp / "grid"
  env = _env(tmp, args.cold_data)
  load_before = os.getloadavg()
  peak_before, peak_cpu_before = measure_peak(args.peak_n)
  cpu0 = _children_cpu_s()
  launch = [sys.executable, "-m", "launch.local", f"--config={args.config}", f"--workdir={workdir}",
            f"--parallel={args.parallel}", "--noreport", *([f"--only={args.only}"] if args.only else []),
            *args.launcher_args]
  launcher_s, rc = _timed(launch, env, tmp / "launcher.log")
  if rc:
    print(f"error: the launcher exited with {rc}; see {tmp / 'launcher.log'}", file=sys.stderr)
    return 1
  report = [sys.executable, "-m", "analysis.report", f"--runs={workdir}", f"--out={workdir / 'report'}"]
  report_s, rc = _timed(report, env, tmp / "report.log")
  if rc:
    print(f"error: the report exited with {rc}; see {tmp / 'report.log'}", file=sys.stderr)
    return 1
  cpu_s = _children_cpu_s() - cpu0
  peak_after, peak_cpu_after = measure_peak(args.peak_n)
  summaries, manifest = collect(workdir)
  wall = launcher_s + report_s
  flops = float(sum(s["flops"] for s in summaries))
  peak, peak_cpu = max(peak_before, peak_after), max(peak_cpu_before, peak_cpu_after)
  row = {
      "bench": "grid", "config": args.config, "only": args.only, "parallel": args.parallel,
      "launcher_args": args.launcher_args, "runs": len(summaries), "wall_s": round(wall, 2),
      "launcher_s": round(launcher_s, 2), "report_s": round(report_s, 2), "train_flops": flops,
      "peak_flops_per_s": peak, "peak_before": peak_before, "peak_after": peak_after,
      "utilization": flops / wall / peak, "cpu_s": round(cpu_s, 2),
      "peak_flops_per_cpu_s": peak_cpu, "utilization_cpu": flops / cpu_s / peak_cpu,
      "runs_wall_s": round(sum(r.get("wall_s") or 0.0 for r in manifest["runs"].values()), 2),
      "phases_s": breakdown(summaries, launcher_s, report_s, args.parallel),
      "final_eval_loss": {s["run_name"]: s["final_eval_loss"] for s in summaries},
      "load_before": [round(x, 2) for x in load_before],
      "load_after": [round(x, 2) for x in os.getloadavg()], "host": os.uname().nodename,
      "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
  }
  line = json.dumps(row)
  print(line, flush=True)
  if args.json_out:
    with open(args.json_out, "a") as f:
      f.write(line + "\n")
  if args.keep:
    shutil.move(str(workdir), args.keep)
  shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
