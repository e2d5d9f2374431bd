"""A tiny grid file for stack tests: points of one shape (tests/conftest.py tiny_config) that differ
in seed, learning rate and epochs, written next to the test's run directories."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from conftest import subprocess_env

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
