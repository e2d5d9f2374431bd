"""A real single-node SLURM cluster on this machine, for the launcher's tests and for trying
`launch.slurm` by hand:

  python -m tests.helpers.local_slurm up DIR [--port=6817] [--noinstall]   # then: export SLURM_CONF=DIR/slurm.conf
  python -m tests.helpers.local_slurm down DIR

`up` installs Debian's `slurm-wlm` and `munge` with apt-get when `slurmctld` is missing (root only),
writes DIR/slurm.conf (one partition `local` holding this host with its real CPU count and memory;
state, spool, logs and pid files all inside DIR), creates a munge key, starts munged, slurmctld and
slurmd on localhost and returns once `sinfo` shows the node idle. Nothing outside DIR is written
(the install aside), so the cluster never touches a system SLURM or munge: its munged listens on
DIR/munge/munge.socket and the daemons use DIR's ports. `down` cancels the cluster's jobs and stops
the daemons by the pids they wrote into DIR, so it never stops a process this script did not start.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

from dlmscale.commands.guard import cli_main

from dlmscale.errors import UserError

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")  # start order; stopped in reverse
PARTITION = "local"
UP_TIMEOUT_S = 90.0
CONF_HEADER = "# Written by tests/helpers/local_slurm.py: a single-node test cluster; everything lives in this folder."


# --- Pure parts: the configuration ---------------------------------------------------------------


def node_line(slurmd_c: str) -> str:
  """`NodeName=... CPUs=... RealMemory=...` from `slurmd -C` (the host as slurmd itself sees it, so
  the node never registers with less than it was configured with and drains)."""
  for line in slurmd_c.splitlines():
    if line.startswith("NodeName="):
      return line.strip()
  raise UserError(f"`slurmd -C` printed no NodeName= line ({slurmd_c.strip()[:200]!r}); "
                  "is slurmd installed correctly?")


def slurm_conf(root: pathlib.Path, node: str, host: str, port: int) -> str:
  """A minimal slurm.conf: root runs everything, no cgroups (works in containers), CPUs as the
  consumable resource, every path inside ROOT."""
  return "\n".join([
      CONF_HEADER,
      "ClusterName=dlmscale-local",
      f"SlurmctldHost={host}(127.0.0.1)",
      f"SlurmctldPort={port}",
      f"SlurmdPort={port + 1}",
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      "CredType=cred/munge",
      # cred_expire is also how long a requeued job waits before it may start again (default 120 s).
      f"AuthInfo=socket={root / 'munge' / 'munge.socket'},cred_expire=20",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_CPU",
      "SchedulerType=sched/backfill",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      "MpiDefault=none",
      "MailProg=/bin/true",
      "SwitchType=switch/none",
      "ReturnToService=2",
      "JobRequeue=1",
      "KillWait=30",
      "MinJobAge=600",
      f"StateSaveLocation={root / 'state'}",
      f"SlurmdSpoolDir={root / 'spool'}",
      f"SlurmctldPidFile={root / 'slurmctld.pid'}",
      f"SlurmdPidFile={root / 'slurmd.pid'}",
      f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
      f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
      f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
      f"PartitionName={PARTITION} Nodes={node.split()[0].split('=')[1]} Default=YES MaxTime=INFINITE State=UP",
  ]) + "\n"


def client_env(root: pathlib.Path, base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment in which sbatch, squeue, scontrol ... talk to this cluster."""
  return {**(os.environ if base is None else base), "SLURM_CONF": str(root / "slurm.conf")}


# --- Install -------------------------------------------------------------------------------------


def missing_tools() -> list[str]:
  return [t for t in ("slurmctld", "slurmd", "munged", "sbatch", "sinfo") if shutil.which(t) is None]


def ensure_installed(install: bool) -> None:
  """apt-get installs SLURM and munge when a tool is missing; only root can, and only when asked."""
  missing = missing_tools()
  if not missing:
    return
  if not install:
    raise UserError(f"{', '.join(missing)} not found; install {' and '.join(PACKAGES)} "
                    "(apt-get install slurm-wlm munge) or drop --noinstall")
  if os.geteuid() != 0:
    raise UserError(f"{', '.join(missing)} not found and installing needs root: run "
                    f"`sudo apt-get install {' '.join(PACKAGES)}`, then this again")
  if shutil.which("apt-get") is None:
    raise UserError(f"{', '.join(missing)} not found and there is no apt-get here; install "
                    f"{' and '.join(PACKAGES)} with this system's package manager")
  env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
  for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
    out = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if out.returncode:
      tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
      raise UserError(f"`{' '.join(cmd)}` failed ({out.returncode}): {tail[0]}")
  if missing_tools():
    raise UserError(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(missing_tools())} is "
                    "still not on PATH (is /usr/sbin on PATH?)")


# --- Daemons -------------------------------------------------------------------------------------


def pid_file(root: pathlib.Path, daemon: str) -> pathlib.Path:
  return root / ("munge/munged.pid" if daemon == "munged" else f"{daemon}.pid")


def read_pid(root: pathlib.Path, daemon: str) -> int | None:
  """The daemon's pid from its pid file, if that process is alive and still that daemon."""
  try:
    pid = int(pid_file(root, daemon).read_text().split()[0])
    comm = pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
  except (OSError, ValueError, IndexError):
    return None
  return pid if comm == daemon else None


def _make_dirs(root: pathlib.Path) -> None:
  for sub in ("state", "spool", "log", "munge"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  os.chmod(root / "munge", 0o755)  # others may reach the socket (to submit), never write here


def _munge_key(root: pathlib.Path) -> pathlib.Path:
  key = root / "munge" / "munge.key"
  if not key.exists():
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as f:
      f.write(os.urandom(1024))
  return key


def daemon_command(root: pathlib.Path, daemon: str) -> list[str]:
  conf = str(root / "slurm.conf")
  m = root / "munge"
  return {
      "munged": ["munged", f"--socket={m / 'munge.socket'}", f"--key-file={m / 'munge.key'}",
                 f"--pid-file={m / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
                 f"--seed-file={m / 'munged.seed'}", "--force"],
      "slurmctld": ["slurmctld", "-f", conf, "-i"],
      "slurmd": ["slurmd", "-f", conf],
  }[daemon]


def _log_tail(root: pathlib.Path, daemon: str, n: int = 3) -> str:
  log = root / "log" / f"{daemon}.log"
  lines = log.read_text(errors="replace").strip().splitlines()[-n:] if log.exists() else []
  return " | ".join(lines) or "(no log)"


def _start(root: pathlib.Path, daemon: str) -> int:
  """Starts one daemon (it forks and writes its pid file) and returns its pid."""
  out = subprocess.run(daemon_command(root, daemon), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, env=client_env(root))
  deadline = time.monotonic() + 20
  while time.monotonic() < deadline:
    pid = read_pid(root, daemon)
    if pid is not None:
      return pid
    time.sleep(0.1)
  raise UserError(f"{daemon} did not start (exit {out.returncode}: {out.stderr.strip()[-200:]}); "
                  f"its log: {_log_tail(root, daemon)}")


def node_state(root: pathlib.Path) -> str:
  out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                       env=client_env(root), stdin=subprocess.DEVNULL)
  return out.stdout.strip() if out.returncode == 0 else ""


def up(root: pathlib.Path, port: int = 6817, install: bool = True) -> dict[str, int]:
  """Brings the cluster up (idempotent: daemons already running from ROOT are kept); returns pids."""
  ensure_installed(install)
  root = root.resolve()
  conf = root / "slurm.conf"
  if conf.exists() and not conf.read_text().startswith(CONF_HEADER):
    raise UserError(f"{conf} exists and was not written by tests/helpers/local_slurm.py; it is left as it is: "
                    "choose another folder for the local cluster")
  _make_dirs(root)
  if not any(read_pid(root, d) for d in DAEMONS):  # (re)written only while nothing runs from ROOT
    probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    conf.write_text(slurm_conf(root, node_line(probe.stdout), socket.gethostname().split(".")[0], port))
  _munge_key(root)
  pids = {}
  for daemon in DAEMONS:
    pids[daemon] = read_pid(root, daemon) or _start(root, daemon)
  deadline = time.monotonic() + UP_TIMEOUT_S
  while (state := node_state(root)) not in ("idle", "mix", "alloc"):
    if time.monotonic() > deadline:
      down(root)
      raise UserError(f"the node did not come up within {UP_TIMEOUT_S:.0f}s (sinfo: {state or 'no answer'}); "
                      f"slurmctld: {_log_tail(root, 'slurmctld')}; slurmd: {_log_tail(root, 'slurmd')}")
    time.sleep(0.2)
  return pids


def _wait_gone(pid: int, timeout_s: float) -> bool:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if not pathlib.Path(f"/proc/{pid}").exists():
      return True
    time.sleep(0.1)
  return False


def cancel_all(root: pathlib.Path, timeout_s: float = 60.0) -> None:
  """Cancels every job of this cluster and waits for them to leave the node."""
  env = client_env(root)
  subprocess.run(["scancel", f"--partition={PARTITION}"], capture_output=True, env=env,
                 stdin=subprocess.DEVNULL)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if not subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL).stdout.strip():
      return
    time.sleep(0.5)


def down(root: pathlib.Path) -> list[str]:
  """Stops what `up` started in ROOT (by the pids in ROOT's pid files); returns the daemons stopped."""
  root = root.resolve()
  if read_pid(root, "slurmctld") and read_pid(root, "slurmd"):
    cancel_all(root)
  stopped = []
  for daemon in reversed(DAEMONS):
    pid = read_pid(root, daemon)
    if pid is None:
      continue
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 15):
      os.kill(pid, signal.SIGKILL)
      _wait_gone(pid, 5)
    stopped.append(daemon)
  return stopped


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m tests.helpers.local_slurm", description=__doc__.split("\n")[0])
  p.add_argument("action", choices=("up", "down"))
  p.add_argument("dir", help="folder for the cluster's config, state, logs and munge key")
  p.add_argument("--port", type=int, default=6817, help="slurmctld's port; slurmd takes the next one")
  p.add_argument("--noinstall", dest="install", action="store_false",
                 help="never apt-get install; fail if SLURM is missing")
  args = p.parse_args(argv)
  root = pathlib.Path(args.dir).expanduser()

  def body() -> int:
    if os.geteuid() != 0:
      raise UserError(f"`{args.action}` needs root: the local cluster's daemons run as root "
                      "(from a virtual environment: sudo .venv/bin/python -m tests.helpers.local_slurm ...)")
    if args.action == "down":
      stopped = down(root)
      print(f"stopped {', '.join(stopped)}" if stopped else f"nothing of {root} was running")
      return 0
    if not 1024 <= args.port < 65535:
      raise UserError(f"--port={args.port}: choose a free port in 1024..65534")
    t0 = time.monotonic()
    pids = up(root, args.port, args.install)
    print(f"SLURM is up in {time.monotonic() - t0:.1f}s ({', '.join(f'{d} {p}' for d, p in pids.items())}); "
          f"partition {PARTITION!r}\n  export SLURM_CONF={root.resolve() / 'slurm.conf'}\n"
          f"  stop it with: python -m tests.helpers.local_slurm down {root}")
    return 0
  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
