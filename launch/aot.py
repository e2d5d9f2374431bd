"""Compiles every distinct shape of a grid for TPU topologies ahead of time, on this (CPU) host:

  python -m launch.aot --config=configs/FILE.py[:ARGS] --topology=v5e:4x4 [--topology=v5p:2x2x2 ...]
      [--json=FILE] [--force] [--set KEY=VALUE] [--only=PATTERN] [--max_tries=N] [--nosuggest]
  python -m launch.aot --config=... --topology=gpu:NODESxGPUS --gpu_target_config=FILE

A shape is what the compiled programs depend on (objective, model, seq_len, batch sizes, eval
samples, dtypes, remat, mesh); points that differ only in U, E, seed or learning rate share one. For
each shape and topology this builds the trainer's own train and eval steps (dlmscale/aot/compiler.py),
compiles them for the topology without a TPU, and prints one row: compiled or the error, per-chip
bytes against HBM, XLA's FLOPs per step beside dlmscale/model/flops.py's, and the roofline step time and
tokens/s. After the rows, per topology, the grid's training device-hours (GPU-hours): every point's
steps at its shape's roofline step time, and the same at an assumed 40% MFU. A shape that does not fit is followed by the first change that does (more fsdp, remat, a
smaller batch), found by compiling it. The rows go to --json (default aot-<grid>-<topologies>.json;
an existing file is kept unless --force). Needs libtpu: `pip install -r requirements-tpu.txt`.
GPUs need JAX's CUDA plugin and a target description captured on one real GPU of the nodes' kind
(bench/capture_gpu_target.py); XLA gives no FLOP count for them, so the roofline uses flops.py's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any

import jax

from dlmscale.aot import compiler as aot, topologies
from dlmscale.train import steps as program
from dlmscale.commands.guard import cli_main
from dlmscale.data import pipeline
from dlmscale.errors import UserError
from launch import grids as grid_lib

GiB = 2**30


def shape_key(config: Any) -> str:
  """Everything the compiled steps' shapes and code depend on, as one readable string."""
  concrete = aot.with_overrides(config, {"model.remat": "none", "model.attention": "xla"})  # only the shape
  m = dataclasses.asdict(program.model_config_from(concrete, aot.vocab_and_mask(config)[0]))
  model = f"d{m['d_model']}x{m['n_layers']}L h{m['n_heads']} ff{m['d_ff']} V{m['vocab_size']}"
  return (f"{config.objective} {config.model_size} ({model}) L={config.data.seq_len} "
          f"B={config.batch_size} evalB={config.eval.batch_size}"
          + (f" K={config.eval.mc_samples}" if config.objective == "mdm" else "")
          + f" {m['dtype']}/{m['param_dtype']} remat={config.model.remat} mesh={config.mesh.data}x{config.mesh.fsdp}"
          + (f" attention={config.model.attention}" if config.model.attention != "xla" else "")
          + (f" micro={config.micro_batch_size}" if config.get("micro_batch_size", 0) else "")
          + (f" loss_chunk={config.model.loss_chunk}" if config.model.get("loss_chunk", 0) else ""))


def distinct_shapes(grid: grid_lib.Grid, names: list[str]) -> list[tuple[str, list[str], Any]]:
  """(key, the points sharing it, the first point's config), in grid order."""
  seen: dict[str, tuple[list[str], Any]] = {}
  for name in names:
    config = grid.configs[name]
    seen.setdefault(shape_key(config), ([], config))[0].append(name)
  return [(k, names_, cfg) for k, (names_, cfg) in seen.items()]


def _gib(x: float | None) -> str:
  return "-" if x is None else f"{x / GiB:.2f}"


def table_header() -> str:
  cols = ["shape", "points", "topology", "result", "train arg/temp/out GiB", "peak GiB / HBM",
          "XLA TFLOP/step", "flops.py TFLOP/step", "XLA/flops.py", "roofline s/step", "tokens/s",
          "roofline MFU"]
  return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def table_row(row: dict[str, Any]) -> str:
  """One markdown row; a failed compile keeps its error in the result column."""
  head = [row["shape"], str(len(row["points"])), row["topology"]]
  xla = row.get("xla_flops_per_step")
  if row["status"] == "error":
    return "| " + " | ".join(head + [f"error: {row['error']}"] + ["-"] * 8) + " |"
  if "train" not in row:  # the compiler refused it: out of HBM
    oom = row.get("compiler_oom", {})
    result = f"does not fit: {oom.get('what', '')} {_gib(oom.get('used_bytes'))} GiB > {_gib(oom.get('limit_bytes'))} GiB usable"
    return "| " + " | ".join(head + [result] + ["-"] * 8) + " |"
  t, r = row["train"], row.get("roofline")
  result = "fits" if row["status"] == "ok" else "does not fit"
  cells = [result, f"{_gib(t['argument_bytes'])}/{_gib(t['temp_bytes'])}/{_gib(t['output_bytes'])}",
           f"{_gib(row['peak_bytes'])} / {_gib(row.get('hbm_bytes'))}",
           "-" if xla is None else f"{xla / 1e12:.3g}", f"{row['model_flops_per_step'] / 1e12:.3g}",
           "-" if xla is None else f"{row['xla_over_model']:.3f}",
           f"{r['step_s']:.3f} ({r['bound']})" if r else "-",
           f"{r['tokens_per_s']:,.0f}" if r else "-", f"{100 * r['mfu']:.1f}%" if r and r["mfu"] is not None else "-"]
  return "| " + " | ".join(head + cells) + " |"


def suggestion_line(row: dict[str, Any]) -> str:
  s = row.get("suggestion")
  if not s:
    return ""
  if not s["found"]:
    tried = "; ".join(f"{t['change']}: {t['status']}" for t in s["tries"]) or "nothing to try"
    return f"  -> no change tried fits ({tried}); use a topology with more chips"
  flags = " ".join(f"--set {k}={v}" for k, v in s["overrides"].items())
  r = s["row"]
  first = "" if s["first"] else " (--max_tries reached: a smaller change may fit)"
  return (f"  -> fits with {s['change']}{first} ({flags}): peak {_gib(r['peak_bytes'])} GiB of "
          f"{_gib(r.get('hbm_bytes'))}, roofline {r['roofline']['step_s']:.3f} s/step, "
          f"{r['roofline']['tokens_per_s']:,.0f} tokens/s" if "roofline" in r else "")


ASSUMED_MFU = 0.4  # a planning figure for the hours at a realistic rate beside the roofline's


def grid_hours(grid: grid_lib.Grid, rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Per topology: the grid's training device-hours at the roofline step time (a lower bound: the
  bf16 peak) and at ASSUMED_MFU, summing every point's steps x its shape's step time x devices.
  Evaluation and compilation are not in it."""
  out: dict[str, dict[str, float]] = {}
  for row in rows:
    r = row.get("roofline")
    if not r:
      continue
    steps = sum(pipeline.steps_for_budget(c.unique_tokens, c.epochs, c.batch_size, c.data.seq_len)
                for c in (grid.configs[n] for n in row["points"]))
    hours = steps * r["step_s"] * row["n_devices"] / 3600
    t = out.setdefault(row["topology"], {"roofline_h": 0.0, "points": 0, "steps": 0})
    t["roofline_h"] += hours
    t["points"] += len(row["points"])
    t["steps"] += steps
  for t in out.values():
    t["at_mfu_h"] = t["roofline_h"] / ASSUMED_MFU
  return out


def hours_line(topology: str, t: dict[str, float], rows: list[dict[str, Any]]) -> str:
  missing = sum(len(r["points"]) for r in rows if r["topology"] == topology and not r.get("roofline"))
  return (f"# {topology}: {t['points']} point(s), {t['steps']:,} training steps: {t['roofline_h']:,.4g} "
          f"device-hours at the roofline (bf16 peak), {t['at_mfu_h']:,.4g} at {100 * ASSUMED_MFU:.0f}% MFU "
          "(training only: evaluation and compiles not counted)"
          + (f"; {missing} point(s) without a roofline are not counted" if missing else ""))


def check_shape(key: str, names: list[str], config: Any, topology: str, devices: list,
                args: argparse.Namespace) -> dict[str, Any]:
  row = {"shape": key, "points": names, "topology": topology, "device_kind": devices[0].device_kind,
         "n_devices": len(devices), "n_hosts": topologies.host_count(devices), **aot.attempt(config, devices)}
  if row["status"] == "too_big" and args.suggest:
    row["suggestion"] = aot.find_fit(config, devices, args.max_tries)
  return row


# Cloud TPU accelerator types -> libtpu topology names (cloud.google.com/tpu/docs/v5e, v6e, v5p, v4).
_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8"}
_GENERATIONS = {"v5litepod": ("v5e", _2D, 1), "v5e": ("v5e", _2D, 1), "v6e": ("v6e", _2D, 1),
                "v5p": ("v5p", _3D, 2), "v4": ("v4", _3D, 2)}  # v5p/v4 types count TensorCores


def topology_for_accelerator(accelerator_type: str) -> str:
  """'v5litepod-16' -> 'v5e:4x4', 'v5p-16' -> 'v5p:2x2x2'; a UserError names the fix otherwise."""
  gen, _, count = accelerator_type.rpartition("-")
  if gen in _GENERATIONS and count.isdigit():
    name, shapes, per_chip = _GENERATIONS[gen]
    shape = shapes.get(int(count) // per_chip)
    if shape:
      return f"{name}:{shape}"
  raise UserError(f"no known topology for --accelerator_type={accelerator_type}; give it with "
                  "--aot_topology (e.g. v5e:4x4, v5p:2x2x2)")


def default_json(grid: grid_lib.Grid, topologies: list[str]) -> pathlib.Path:
  topo = "+".join(t.replace(":", "-") for t in topologies)
  return pathlib.Path(f"aot-{grid.path.stem}-{grid.hash}-{topo}.json")


def write_json(path: pathlib.Path, obj: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1) + "\n")
  tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m launch.aot", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="grid file and argument, e.g. configs/datacons.py:scale=cluster")
  p.add_argument("--topology", action="append", required=True,
                 help="TPU topology to compile for, e.g. v5e:4x4 (repeatable)")
  p.add_argument("--gpu_target_config", default="",
                 help="for --topology=gpu:NxG: a GPU description from bench/capture_gpu_target.py")
  p.add_argument("--json", default="", help="where the rows go (default aot-<grid>-<hash>-<topologies>.json; - = nowhere)")
  p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as launch.local")
  p.add_argument("--only", default="", help="as launch.local: run-name glob patterns")
  p.add_argument("--max_tries", type=int, default=6, help="changes compiled per shape that does not fit")
  p.add_argument("--nosuggest", dest="suggest", action="store_false", help="do not search for a change that fits")
  return p


def run(args: argparse.Namespace) -> int:
  """0 when every shape compiles and fits, else 1. Checks all input before compiling or writing."""
  grid = grid_lib.load_points(args.config, grid_lib.parse_sets(args.set))  # the file first: its
  names = grid_lib.select_names(grid, args.only)  # problems are the user's most likely ones
  found = {t: topologies.devices_for(t, getattr(args, "gpu_target_config", "")) for t in dict.fromkeys(args.topology)}
  devices = {t: devs for t, (devs, _) in found.items()}
  for t, (_, dropped) in found.items():
    if dropped:
      print(f"# {t}: fields of --gpu_target_config this jax ({jax.__version__}) does not know, so its "
            f"compiler cannot use them, were dropped: {', '.join(dropped)}", flush=True)
  out = None if args.json == "-" else pathlib.Path(args.json or default_json(grid, args.topology))
  if out and out.exists() and not args.force:
    raise UserError(f"--json={out} exists; pass --force to overwrite it or choose another --json")
  if args.max_tries < 0:
    raise UserError(f"--max_tries={args.max_tries}: give 0 or more")
  shapes = distinct_shapes(grid, names)
  print(f"# {len(names)} point(s) of {grid.spec}: {len(shapes)} distinct shape(s) x "
        f"{len(devices)} topology(ies)", flush=True)
  print(table_header(), flush=True)
  rows = []
  for topology, devs in devices.items():
    for key, point_names, config in shapes:
      row = check_shape(key, point_names, config, topology, devs, args)
      if found[topology][1]:
        row["gpu_target_fields_dropped"] = found[topology][1]
      rows.append(row)
      print(table_row(row), flush=True)
      if line := suggestion_line(row):
        print(line, flush=True)
      if out:  # after every row, so a long run stopped part-way keeps what it compiled
        write_json(out, {"grid": grid.spec, "grid_hash": grid.hash, "rows": rows})
  hours = grid_hours(grid, rows)
  for topology, t in hours.items():
    print(hours_line(topology, t, rows), flush=True)
  if out and hours:
    write_json(out, {"grid": grid.spec, "grid_hash": grid.hash, "rows": rows, "device_hours": hours})
  bad = [r for r in rows if r["status"] != "ok"]
  print(f"# {len(rows) - len(bad)} of {len(rows)} fit" + (f"; rows in {out}" if out else ""), flush=True)
  return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return cli_main(lambda: run(args))


if __name__ == "__main__":
  sys.exit(main())
