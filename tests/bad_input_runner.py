"""Runs many command lines cheaply, each as if it were its own `python -m MODULE ARGS...` process.

One fresh interpreter imports the heavy libraries once (nothing initialises a JAX backend), then
forks a child per case: the child gets its own cwd, environment, argv and stdio files, runs the
module as __main__ with runpy and exits with the status the command chose. So each case is a real
process start of the command's own entry code (its flags, its guard), at a fraction of the cost.

Protocol: a JSON list of cases on stdin, each {"module", "argv", "cwd", "env", "watch"} and
optionally "user": [uid, gid] to run it as (the runner forks as root, the child drops to it); a JSON
list of {"rc", "stdout", "stderr", "changed"} on stdout, where `changed` lists the watched paths
whose files (names and bytes) differ after the case.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import runpy
import signal
import sys
import tempfile
import time
import warnings

PRELOAD = ("numpy", "jax", "absl.flags", "ml_collections.config_flags", "orbax.checkpoint", "pandas",
           "dlmscale.train.loop", "dlmscale.evaluate", "dlmscale.sample", "dlmscale.data",
           "analysis.report", "analysis.fit", "launch.local", "launch.manifest")
CASE_TIMEOUT_S = 120


def tree_digest(path: str) -> dict[str, str]:
  """{relative path: sha256} of every file under path (or of path itself); {} when absent."""
  p = pathlib.Path(path)
  if p.is_file():
    return {".": hashlib.sha256(p.read_bytes()).hexdigest()}
  if not p.is_dir():
    return {}
  return {"<directory>": "", **{str(f.relative_to(p)): hashlib.sha256(f.read_bytes()).hexdigest()
                                for f in sorted(p.rglob("*")) if f.is_file() and f.name != ".lock"}}


def _child(case: dict, out_path: str, err_path: str) -> None:
  signal.alarm(CASE_TIMEOUT_S)
  out_fd, err_fd = os.open(out_path, os.O_WRONLY), os.open(err_path, os.O_WRONLY)
  os.dup2(out_fd, 1)
  os.dup2(err_fd, 2)
  if case.get("user"):  # root runs this case as an unprivileged user: fork, then drop privileges
    uid, gid = case["user"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
  os.chdir(case["cwd"])
  os.environ.update(case.get("env", {}))
  sys.argv = [case["module"], *case["argv"]]
  warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
  rc = 0
  try:
    runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
  except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # noqa: BLE001 - a traceback escaping the command: print it as Python would
    import traceback
    traceback.print_exc()
    rc = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(rc)


def run_case(case: dict) -> dict:
  before = {w: tree_digest(w) for w in case.get("watch", [])}
  t0 = time.perf_counter()
  with tempfile.NamedTemporaryFile(delete=False) as o, tempfile.NamedTemporaryFile(delete=False) as e:
    out_path, err_path = o.name, e.name
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    _child(case, out_path, err_path)
  _, status = os.waitpid(pid, 0)
  rc = os.waitstatus_to_exitcode(status)
  result = {"rc": rc, "stdout": pathlib.Path(out_path).read_text(errors="replace"),
            "stderr": pathlib.Path(err_path).read_text(errors="replace"),
            "changed": [w for w in before if tree_digest(w) != before[w]],
            "wall_s": round(time.perf_counter() - t0, 2)}
  os.unlink(out_path)
  os.unlink(err_path)
  return result


def main() -> None:
  import importlib
  for name in PRELOAD:
    importlib.import_module(name)
  cases = json.loads(sys.stdin.read())
  print(json.dumps([run_case(c) for c in cases]))


if __name__ == "__main__":
  main()
