"""Trains grid points of one compiled shape as stacks, in this process:

  python -m launch.train_stack --config=configs/FILE.py[:ARGS] --workdir=DIR [--only=NAMES] [--stack=N|auto]

Each selected unfinished point trains into DIR/<run_name>/ exactly as `python -m dlmscale.main`
would train it (same files, rows and summary), but points that share a compiled shape train
together, up to N per stack, as one vmapped program (dlmscale/train/stack.py); points of different
shapes go into different stacks, trained one stack after another. `--stack=auto`: as many per stack
as fit this device's memory (dlmscale/train/stack_fit.py: the stacked step compiled ahead of time
for up to stacks.AUTO_CAP points of a shape, against 0.9 of the device's memory, or of
$DLMSCALE_DEVICE_MEMORY_BYTES per device); the points beyond go into the following stacks of that
shape, so none is left out. The decision is printed (`--stack=auto: S of N per stack ...`) and kept
under `stack_auto` in each member's outcome. WSD trunks stack with trunks and branches with
branches (launch/stacks.py), the branches' stacks last, so each branch starts from its trunk's
checkpoint; a branch whose trunk has not saved it (a trunk that diverged, or is not
selected and not trained) is left out with exit status 2. Re-running resumes every member from its
own checkpoint. `launch.local --stack=N|auto` starts one of these per stack (auto: per up to
stacks.AUTO_CAP points of a shape).

Exit status: 0 when every member is done (or stopped by a signal, resumable), 3 when a member's
loss went non-finite (it is frozen with its last good checkpoint; the others finish), 2 bad input
or a branch left out, 1 internal error. --result_json=PATH writes each member's outcome
{name: {state, rc, error, step, total, stack: the names of its stack, stack_auto: the decision}}.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from launch import grids as grid_lib
from launch import branches, stacks


def build_parser() -> cli_guard.ArgumentParser:
  p = cli_guard.ArgumentParser(prog="python -m launch.train_stack", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="grid file and argument, e.g. configs/quickstart.py")
  p.add_argument("--workdir", required=True, help="grid directory; each point runs in WORKDIR/<run_name>/")
  p.add_argument("--only", default="", help="these names only (comma-separated, glob patterns)")
  p.add_argument("--stack", type=stacks.stack_arg, default=64, metavar="N|auto",
                 help="at most this many points per stack; auto: as many as fit the device's memory")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key in every point, as launch.local --set")
  p.add_argument("--result_json", default="", help="write each member's outcome here")
  return p


def train_group(grid: grid_lib.Grid, workdir: pathlib.Path, group: list[str], auto: bool,
                outcomes: dict[str, dict]) -> bool:
  """Trains points of one shape: one stack, or with `auto` as many stacks as the device's memory
  asks for, one after another. Adds their outcomes; False when a signal stopped them."""
  from dlmscale.train import stack  # noqa: PLC0415 - JAX starts only for valid input
  configs = [grid.configs[n] for n in group]
  size, record = len(group), None
  if auto:
    from dlmscale.train import stack_fit  # noqa: PLC0415 - compiles ahead of time
    fit = stack_fit.choose(configs)
    print(fit.line(), flush=True)
    size, record = fit.size, fit.record()
  for i in range(0, len(group), size):
    names = group[i:i + size]
    print(f"stack of {len(names)}: {', '.join(names)}", flush=True)
    got = stack.train_stack(configs[i:i + size], [workdir / n for n in names])
    for o in got:
      if record:
        o["stack_auto"] = record
      o["stack"] = names
    outcomes.update(zip(names, got))
    if any(o["state"] == "stopped" for o in got):
      return False
  return True


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  workdir = pathlib.Path(args.workdir).expanduser().resolve()
  outcomes: dict[str, dict] = {}

  def body() -> int:
    grid = grid_lib.load_points(args.config, grid_lib.parse_sets(args.set))
    names = grid_lib.select_names(grid, args.only)
    todo = [n for n in names if not run_dir.is_finished(workdir / n)]
    for group in stacks.groups(grid, todo, stacks.cap(args.stack)):
      waiting = [n for n in group if not branches.ready(grid, workdir, n)]
      for n in waiting:
        step = int(grid.configs[n].branch.start_step)
        error = f"its trunk {branches.trunk_of(grid.configs[n])} has no checkpoint at step {step}"
        print(f"error: {n}: {error}; left out", file=sys.stderr, flush=True)
        outcomes[n] = {"workdir": str(workdir / n), "state": "waiting", "rc": 2, "error": error}
      group = [n for n in group if n not in waiting]
      if group and not train_group(grid, workdir, group, args.stack == stacks.AUTO, outcomes):
        break  # stopped by a signal
    rcs = {o["rc"] for o in outcomes.values()}
    return 3 if 3 in rcs else 2 if 2 in rcs else 0

  rc = cli_guard.guard(body, "launch.train_stack")
  if args.result_json:
    path = pathlib.Path(args.result_json)
    run_dir.write_text_atomic(path, json.dumps(outcomes, indent=1) + "\n")
  return rc


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
