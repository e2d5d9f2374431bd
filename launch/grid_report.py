"""The analysis report over a grid directory, run by a launcher once its points are done."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

from launch.grids import REPO_ROOT


def run(workdir: pathlib.Path, module: str) -> int:
  """The analysis report over the grid, when the analysis package provides one."""
  try:
    found = importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    found = False
  if not found:
    print(f"(no {module} module: skipping the report)", flush=True)
    return 0
  cmd = [sys.executable, "-m", module, f"--runs={workdir}", f"--out={workdir / 'report'}"]
  print(f"report: {' '.join(cmd)}", flush=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])))
  rc = subprocess.call(cmd, cwd=REPO_ROOT, env=env)
  if rc:
    print(f"error: the report exited with status {rc}; the runs are intact, re-run: {' '.join(cmd)}",
          file=sys.stderr)
  return rc
