"""A tiny grid file for stack tests: points of one shape (tests/conftest.py tiny_config) that differ
in seed, learning rate and epochs, written next to the test's run directories."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from conftest import subprocess_env
from dlmscale import run_dir as rundir

TIMING = ("wall_s", "tokens_per_s", "mfu", "phases", "startup_s", "startup_compile_s", "backend", "device_kind")  # summary keys
REPO = pathlib.Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

# Three members: the base, another seed and lr, and a shorter run (fewer epochs: fewer steps).
POINTS = [{"run_name": "a", "seed": 0},
          {"run_name": "b", "seed": 1, "optim.lr": 3e-3},
          {"run_name": "c", "seed": 2, "epochs": 2.0}]

_GRID = """
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config

def get_config(arg=None):
  return tiny_config({corpus!r}, {cache!r}, {objective!r}, **{overrides!r})

def sweep(arg=None):
  return {points!r}
"""


def write_grid(path: pathlib.Path, corpus: str, cache: str, objective: str = "mdm",
               points: list[dict] | None = None, **overrides) -> str:
  """The grid file's --config value."""
  path.write_text(_GRID.format(tests=str(TESTS), corpus=corpus, cache=cache, objective=objective,
                               overrides=overrides, points=points or POINTS))
  return str(path)


def train_stack(spec: str, workdir: pathlib.Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
  """`python -m launch.train_stack` on the grid, as a subprocess."""
  cmd = [sys.executable, "-m", "launch.train_stack", f"--config={spec}", f"--workdir={workdir}", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(**env), cwd=REPO, timeout=300)


def comparable_rows(rows: list[dict]) -> list[dict]:
  """Metrics rows less the fields that measure time."""
  return [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s", "mfu")} for r in rows]


def assert_rows_close(a: list[dict], b: list[dict], rtol: float = 1e-5) -> None:
  """The same rows (step, split, fields), every number within rtol of the other's."""
  a, b = comparable_rows(a), comparable_rows(b)
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for x, y in zip(a, b):
    assert set(x) == set(y), (x, y)
    for k, v in y.items():
      if isinstance(v, float):
        assert abs(x[k] - v) <= rtol * max(abs(v), 1e-12), (k, x, y)
      else:
        assert x[k] == v, (k, x, y)


def outcomes(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())


def files(workdir) -> list[str]:
  """The run directory's files (a TensorBoard event file's name holds its time and host)."""
  return sorted(str(p.relative_to(workdir)).split(".out.tfevents")[0] for p in workdir.rglob("*")
                if "checkpoints" not in p.parts)


def assert_same_run(member, solo, resumed: bool = False, unlaunched: bool = False) -> None:
  """`member`'s run directory is `solo`'s: rows within 1e-5, the summary (less timings), the same
  files and kept checkpoints. `resumed`: `member` was stopped and resumed, so it may hold one
  TensorBoard file per attempt, a log of the saves a kill cut short and a stop's own checkpoint, as
  a solo run stopped alike would. `unlaunched`: `member` was trained without a launcher (no launch
  log), `solo` by one."""
  assert_rows_close(rundir.read_metrics(member), rundir.read_metrics(solo))
  a, b = rundir.read_summary(member), rundir.read_summary(solo)
  assert set(a) == set(b)
  for k, v in b.items():
    if k in TIMING or k == "data_dir":
      continue
    if isinstance(v, float):
      assert abs(a[k] - v) <= 1e-5 * max(abs(v), 1e-12), (k, a[k], v)
    else:
      assert a[k] == v, (k, a[k], v)
  if resumed or unlaunched:
    extra = {rundir.CHECKPOINT_ERRORS} if resumed else set()
    lacks = {rundir.LAUNCH_LOG} if unlaunched else set()
    assert set(files(member)) - extra == set(files(solo)) - lacks
  else:
    assert files(member) == files(solo)
  saved = lambda d: sorted(int(p.name) for p in rundir.checkpoints_dir(d).iterdir() if p.name.isdigit())
  if resumed:  # a stop's own save (SIGTERM) may be among the kept ones
    assert saved(member)[-1] == saved(solo)[-1]
  else:
    assert saved(member) == saved(solo)


_MEASURE = """
import json, sys
sys.path.insert(0, {tests!r})
from launch import grids
from dlmscale.train import open_run, stack, stack_fit
grid = grids.load_points({spec!r})
configs = [grid.configs[n] for n in {names!r}]
stack.start_jax(configs)
built = open_run.build(configs[0], stack.make_mesh(configs[0]))
print(json.dumps({{s: stack_fit.need(built.setup, built.config, s) for s in range(1, len(configs) + 1)}}))
"""


def measured_needs(spec: str, names: list[str]) -> dict[int, int]:
  """stack_fit.need(S) for S = 1..len(names) of the grid's points, measured in a fresh process that
  starts JAX as a stack process does (the same CPU device count, so the same bytes per device)."""
  code = _MEASURE.format(tests=str(TESTS), spec=spec, names=names)
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                       cwd=REPO, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  return {int(s): b for s, b in json.loads(res.stdout.strip().splitlines()[-1]).items()}
