"""Runs a grid on a Cloud TPU VM (one point at a time, each on the whole slice):

  python -m launch.tpu --config=configs/FILE.py[:ARGS] --workdir=DIR --tpu=NAME --zone=ZONE \\
      --accelerator_type=v5litepod-16 [--project=P] [--queued] [--spot] [--dry_run]

1. Reuses the TPU VM NAME when it is READY, else creates it (`--queued`: through a queued resource,
   which waits for capacity instead of failing).
2. Copies this checkout to every worker and installs it in ~/dlmscale/.venv (jax[tpu]); the venv is
   rebuilt only when requirements.txt changes.
3. Creates or checks DIR/grid_manifest.json on worker 0, then for each unfinished point runs
   `python -m dlmscale.main ...` on every worker at once (`--worker=all`), so the workers form one
   jax.distributed job (dlmscale/runtime/multihost.py detects the slice). A finished point is skipped; a
   preempted VM is recreated and the point resumes from its checkpoint.
DIR must be the same directory on every worker: a gcsfuse mount or NFS (e.g. --setup='gcsfuse
--implicit-dirs BUCKET /mnt/runs'). `--dry_run` prints every gcloud command in order and runs none.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tarfile
import time

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from dlmscale.errors import UserError
from launch import grids as grid_lib

REPO_ROOT = grid_lib.REPO_ROOT
REMOTE_REPO = "~/dlmscale"
REMOTE_TARBALL = "/tmp/dlmscale.tgz"
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
SKIP_IN_TARBALL = {".venv", ".git", "__pycache__", ".pytest_cache", "runs", ".ci"}
USER_ERROR_RC = cli_guard.EXIT_USER_ERROR
DIVERGED_RC = cli_guard.EXIT_DIVERGED  # dlmscale.main: the loss became NaN/inf; a retry would diverge again


class Gcloud:
  """Builds the gcloud commands for one TPU VM; runs them, or only prints them (--dry_run)."""

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

  def describe_vm(self) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "describe", self.args.tpu, *self.where, "--format=value(state)"]

  def create(self) -> list[str]:
    a = self.args
    capacity = ["--spot"] if a.spot else []
    if a.queued:
      return ["gcloud", "compute", "tpus", "queued-resources", "create", a.tpu, f"--node-id={a.tpu}", *self.where,
              f"--accelerator-type={a.accelerator_type}", f"--runtime-version={a.runtime_version}", *capacity]
    return ["gcloud", "compute", "tpus", "tpu-vm", "create", a.tpu, *self.where,
            f"--accelerator-type={a.accelerator_type}", f"--version={a.runtime_version}", *capacity]

  def describe_queued(self) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.args.tpu, *self.where,
            "--format=value(state.state)"]

  def delete_queued(self) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", "delete", self.args.tpu, *self.where, "--quiet", "--force"]

  def scp(self, local_path: str, remote_path: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", local_path, f"{self.args.tpu}:{remote_path}",
            "--worker=all", *self.where]

  def ssh(self, command: str, worker: str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.args.tpu, f"--worker={worker}", *self.where,
            f"--command={command}"]


def repo_tarball() -> bytes:
  """This checkout as a .tgz (code and configs; no venv, caches or runs), deterministic in content."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for root, dirs, files in os.walk(REPO_ROOT):
      dirs[:] = sorted(d for d in dirs if d not in SKIP_IN_TARBALL)
      for name in sorted(files):
        path = pathlib.Path(root) / name
        info = tar.gettarinfo(str(path), arcname=str(path.relative_to(REPO_ROOT)))
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        with open(path, "rb") as f:
          tar.addfile(info, f)
  return buf.getvalue()


MIN_PYTHON = (3, 11)
PYTHON_VERSION_COMMAND = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"


def install_command(args: argparse.Namespace) -> str:
  """Unpacks the code on a worker; builds the venv only when requirements.txt changed."""
  req = hashlib.sha256((REPO_ROOT / "requirements.txt").read_bytes()).hexdigest()[:12]
  venv = f"{REMOTE_REPO}/.venv"
  build = (f"rm -rf {venv} && python3 -m venv {venv} && {venv}/bin/pip install -q -r {REMOTE_REPO}/requirements.txt"
           f" && {venv}/bin/pip install -q 'jax[tpu]=={_jax_version()}' -f {LIBTPU_INDEX} && touch {venv}/.installed-{req}")
  steps = ["set -e", f"mkdir -p {REMOTE_REPO}", f"tar -xzf {REMOTE_TARBALL} -C {REMOTE_REPO}",
           f"if [ ! -f {venv}/.installed-{req} ]; then {build}; fi", *([args.setup] if args.setup else [])]
  return "; ".join(steps)


def _jax_version() -> str:
  for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
    if line.startswith("jax=="):
      return line.split("==", 1)[1].strip()
  raise UserError("requirements.txt pins no jax version; the TPU install needs one")


def _remote(cmd: str) -> str:
  return f"cd {REMOTE_REPO} && export PYTHONPATH=$PWD && {cmd}"


def manifest_init_command(grid: grid_lib.Grid, workdir: str, args: argparse.Namespace) -> str:
  extra = [f"--set={s}" for s in args.set] + (["--extend"] if args.extend else [])
  return _remote(shlex.join([".venv/bin/python", "-m", "launch.manifest", f"--workdir={workdir}",
                             f"--init={grid.spec}", *extra]))


def mark_command(workdir: str, name: str, state: str) -> str:
  return _remote(shlex.join([".venv/bin/python", "-m", "launch.manifest", f"--workdir={workdir}",
                             f"--mark={name}={state}"]))


def point_command(grid: grid_lib.Grid, name: str, workdir: str, trainer: str) -> str:
  """Runs on every worker: skip a finished point, else train (resuming from the checkpoint)."""
  summary = shlex.quote(f"{workdir}/{name}/{run_dir.SUMMARY}")
  train = shlex.join([".venv/bin/python", "-m", trainer, *grid.trainer_args(name, pathlib.PurePosixPath(workdir))])
  return _remote(f"if [ -f {summary} ]; then echo {shlex.quote(name)} already finished; else {train}; fi")


def report_command(workdir: str) -> str:
  return _remote(shlex.join([".venv/bin/python", "-m", "analysis.report", f"--runs={workdir}",
                             f"--out={workdir}/report"]))


class Driver:
  """Executes (or prints) the sequence: VM up, install, manifest, points, report."""

  def __init__(self, args: argparse.Namespace, gcloud: Gcloud):
    self.args, self.g = args, gcloud

  def call(self, cmd: list[str], check: bool = True) -> int:
    print(f"$ {shlex.join(cmd)}", flush=True)
    if self.args.dry_run:
      return 0
    rc = subprocess.call(cmd)
    if check and rc:
      raise UserError(f"gcloud exited with {rc} for: {shlex.join(cmd)}")
    return rc

  def output(self, cmd: list[str]) -> str:
    try:
      out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
      raise UserError("gcloud is not on PATH: install the Google Cloud SDK (or use --dry_run)") from None
    return out.stdout.strip() if out.returncode == 0 else ""

  def ensure_vm(self) -> None:
    if self.args.dry_run:
      print(f"# reuse the VM when this prints READY:\n$ {shlex.join(self.g.describe_vm())}")
      print("# otherwise create it:")
      self.call(self.g.create())
      if self.args.queued:
        print(f"# and poll until ACTIVE:\n$ {shlex.join(self.g.describe_queued())}")
      return
    state = self.output(self.g.describe_vm())
    if state == "READY":
      print(f"reusing TPU VM {self.args.tpu} (READY)", flush=True)
      return
    if self.args.queued:
      if self.output(self.g.describe_queued()) in ("FAILED", "SUSPENDED"):
        self.call(self.g.delete_queued())  # a preempted spot slice: ask for a new one
      if not self.output(self.g.describe_queued()):
        self.call(self.g.create())
      self._wait_queued()
    elif state:
      raise UserError(f"TPU VM {self.args.tpu} is {state}; wait for it or delete it, then re-run")
    else:
      self.call(self.g.create())

  def _wait_queued(self) -> None:
    deadline = time.time() + self.args.wait_s
    while (state := self.output(self.g.describe_queued())) != "ACTIVE":
      if state in ("FAILED", "SUSPENDED") or time.time() > deadline:
        raise UserError(f"queued resource {self.args.tpu} is {state or 'missing'} after waiting; see "
                        f"`{shlex.join(self.g.describe_queued()[:-1])}`")
      print(f"queued resource {self.args.tpu}: {state or 'not yet visible'}; waiting", flush=True)
      time.sleep(30)

  def check_python(self) -> None:
    """The workers' python3 first: the pins (numpy 2.4, pandas 3.1) install on 3.11+ only."""
    cmd = self.g.ssh(PYTHON_VERSION_COMMAND, worker="0")
    if self.args.dry_run:
      print(f"# the workers' python3 must be {'.'.join(map(str, MIN_PYTHON))}+:\n$ {shlex.join(cmd)}")
      return
    found = self.output(cmd)
    version = tuple(int(x) for x in found.split(".")[:2]) if re.fullmatch(r"\d+\.\d+", found) else None
    if version is None or version < MIN_PYTHON:
      need = ".".join(map(str, MIN_PYTHON))
      raise UserError(f"the TPU VM's python3 is {found or 'unknown'}, the pinned requirements need {need}+: pick "
                      f"a --runtime_version whose image ships Python {need}+, or install python{need} on the VM "
                      f"(sudo apt-get install -y python{need} python{need}-venv) and make it python3")

  def install(self) -> None:
    self.check_python()
    tgz = pathlib.Path("/tmp") / "dlmscale-launch.tgz"
    if not self.args.dry_run:
      tgz.write_bytes(repo_tarball())
    else:
      print(f"# {tgz}: this checkout without {', '.join(sorted(SKIP_IN_TARBALL))}")
    self.call(self.g.scp(str(tgz), REMOTE_TARBALL))
    self.call(self.g.ssh(install_command(self.args)))

  def run_point(self, grid: grid_lib.Grid, name: str) -> str:
    """'done' or 'failed'; a VM that vanished mid-run is recreated and the point resumed."""
    w = self.args.workdir
    for attempt in range(1, self.args.max_attempts + 1):
      self.call(self.g.ssh(mark_command(w, name, "running"), worker="0"), check=False)
      rc = self.call(self.g.ssh(point_command(grid, name, w, self.args.trainer_module)), check=False)
      if rc == 0:
        self.call(self.g.ssh(mark_command(w, name, "done"), worker="0"), check=False)
        return "done"
      if rc in (USER_ERROR_RC, DIVERGED_RC) or self.args.dry_run:
        break
      print(f"{name}: attempt {attempt} exited {rc}; checking the VM and resuming", flush=True)
      self.ensure_vm()
      if self.output(self.g.describe_vm()) == "READY" and attempt < self.args.max_attempts:
        self.install()
    self.call(self.g.ssh(mark_command(w, name, f"failed:{rc}"), worker="0"), check=False)
    return "failed"

  def run(self, grid: grid_lib.Grid, names: list[str]) -> int:
    self.ensure_vm()
    self.install()
    self.call(self.g.ssh(manifest_init_command(grid, self.args.workdir, self.args), worker="0"))
    failed = [n for n in names if self.run_point(grid, n) == "failed"]
    if self.args.report and (REPO_ROOT / "analysis" / "report.py").exists():
      self.call(self.g.ssh(report_command(self.args.workdir), worker="0"), check=False)
    if failed:
      print(f"{len(failed)} point(s) failed: {', '.join(failed)}; the trainer output is above", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
  p = cli_guard.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="grid file and argument, e.g. configs/datacons.py:scale=cluster")
  p.add_argument("--workdir", required=True, help="grid directory, the same path on every worker")
  p.add_argument("--tpu", required=True, help="TPU VM (and queued resource) name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="", help="default: gcloud's configured project")
  p.add_argument("--accelerator_type", default="v5litepod-8")
  p.add_argument("--runtime_version", default="v2-alpha-tpuv5-lite")
  p.add_argument("--queued", action="store_true", help="create through a queued resource")
  p.add_argument("--spot", action="store_true", help="spot capacity (preemptible; points resume)")
  p.add_argument("--setup", default="", help="shell run on every worker after install (e.g. a gcsfuse mount)")
  p.add_argument("--max_attempts", type=int, default=5, help="tries per point across preemptions")
  p.add_argument("--wait_s", type=float, default=6 * 3600, help="how long to wait for queued capacity")
  p.add_argument("--dry_run", action="store_true", help="print the gcloud commands; run none")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as launch.local")
  p.add_argument("--only", default="", help="as launch.local")
  p.add_argument("--extend", action="store_true", help="as launch.local")
  p.add_argument("--noreport", dest="report", action="store_false")
  p.add_argument("--aot_check", action="store_true",
                 help="first compile every shape of the grid for the slice on this host (launch.aot, needs "
                      "libtpu); launch nothing if one does not fit")
  p.add_argument("--aot_topology", default="", help="topology for --aot_check (default: from --accelerator_type)")
  p.add_argument("--trainer_module", default="dlmscale.main", help=argparse.SUPPRESS)
  return p


def aot_check(args: argparse.Namespace) -> int:
  """launch.aot for this grid on the slice's topology; nothing is written (the table is printed)."""
  from launch import aot  # pylint: disable=g-import-not-at-top  (imports the trainer's modules)
  topology = args.aot_topology or aot.topology_for_accelerator(args.accelerator_type)
  check = argparse.Namespace(config=args.config, topology=[topology], json="-", force=False, set=args.set,
                             only=args.only, max_tries=6, suggest=True)
  return aot.run(check)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)

  def body() -> int:
    run_dir.check_not_url(args.workdir)  # a bucket must be mounted on the workers
    if not args.workdir.startswith("/"):
      raise UserError(f"--workdir={args.workdir!r}: give an absolute path on the workers (e.g. /mnt/runs/datacons)")
    grid = grid_lib.load_points(args.config, grid_lib.parse_sets(args.set))
    names = grid_lib.select_names(grid, args.only)
    if args.aot_check and aot_check(args):
      print("--aot_check: a shape above does not compile or fit the slice; nothing launched. Apply the "
            "suggested change (--set KEY=VALUE) or choose a larger --accelerator_type.", file=sys.stderr)
      return 1
    if args.dry_run:
      print(f"# {len(names)} point(s) of {grid.spec} (grid hash {grid.hash}) on TPU VM {args.tpu}")
    return Driver(args, Gcloud(args)).run(grid, names)
  return cli_guard.cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
