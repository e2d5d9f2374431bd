"""A small tmpfs for the full-disk tests: root mounts it (CI runs as root); elsewhere the test is
skipped with the reason."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_tmpfs(mount_dir: pathlib.Path, kib: int) -> Iterator[pathlib.Path]:
  """`mount_dir` as a fresh tmpfs of `kib` KiB for the body, unmounted afterwards."""
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
  mount_dir.mkdir(parents=True, exist_ok=True)
  got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount_dir)],
                       capture_output=True, text=True)
  if got.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip() or got.returncode}")
  try:
    yield mount_dir
  finally:
    subprocess.run(["umount", "-l", str(mount_dir)], capture_output=True)


def tree_kib(path: pathlib.Path) -> int:
  """KiB the files under `path` take, counted as tmpfs does (whole 4 KiB pages)."""
  pages = sum(-(-p.stat().st_size // 4096) for p in path.rglob("*") if p.is_file())
  return pages * 4


@contextlib.contextmanager
def slow_disk(mount_dir: pathlib.Path, mib: int, write_kib_s: int) -> Iterator[tuple[pathlib.Path, str]]:
  """`mount_dir` as a fresh ext4 on a loop device, mounted `sync` (every write reaches the device
  before it returns, as on NFS), whose writes the kernel throttles to `write_kib_s` KiB/s for the
  processes in a blkio cgroup. Yields the mount point and that cgroup's `cgroup.procs` (a process
  writes its pid there to be throttled). Skipped with the reason where root, loop devices or block
  I/O throttling (cgroup v1 blkio or v2 io) are missing."""
  if os.geteuid() != 0:
    pytest.skip("a throttled loop-device disk needs root (CI runs as root)")
  mount_dir.mkdir(parents=True, exist_ok=True)
  image = mount_dir.with_name(mount_dir.name + ".img")
  with open(image, "wb") as f:
    f.truncate(mib << 20)
  undo: list[list[str]] = []
  cgroup: pathlib.Path | None = None

  def run(*cmd: str) -> str:
    got = subprocess.run(list(cmd), capture_output=True, text=True)
    if got.returncode != 0:
      pytest.skip(f"cannot make a throttled disk here: {' '.join(cmd)}: {got.stderr.strip() or got.returncode}")
    return got.stdout.strip()

  try:
    run("mkfs.ext4", "-q", "-F", str(image))
    loop = run("losetup", "-f", "--show", str(image))
    undo.append(["losetup", "-d", loop])
    run("mount", "-o", "sync", loop, str(mount_dir))
    undo.append(["umount", "-l", str(mount_dir)])
    rdev = os.stat(loop).st_rdev
    device = f"{os.major(rdev)}:{os.minor(rdev)}"
    cgroup, limit = _io_cgroup(f"dlmscale-slow-{os.getpid()}-{os.minor(rdev)}")
    limit.write_text(_io_limit(limit, device, write_kib_s * 1024))
    yield mount_dir, str(cgroup / "cgroup.procs")
  finally:
    for cmd in reversed(undo):
      subprocess.run(cmd, capture_output=True)
    if cgroup is not None:
      for pid in (cgroup / "cgroup.procs").read_text().split():  # none are left: our runs have ended
        (cgroup.parent / "cgroup.procs").write_text(pid)
      cgroup.rmdir()
    image.unlink(missing_ok=True)


def _io_cgroup(name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """A fresh cgroup that can throttle block writes, and its limit file (v1 blkio, else v2 io)."""
  v1 = pathlib.Path("/sys/fs/cgroup/blkio")
  v2 = pathlib.Path("/sys/fs/cgroup")
  for parent, limit in ((v1, "blkio.throttle.write_bps_device"), (v2, "io.max")):
    if not (parent / limit).exists() and not (parent / "cgroup.subtree_control").exists():
      continue
    if limit == "io.max" and "io" not in (parent / "cgroup.subtree_control").read_text().split():
      continue
    try:
      (parent / name).mkdir()
    except OSError:
      continue
    if (parent / name / limit).exists():
      return parent / name, parent / name / limit
    (parent / name).rmdir()
  pytest.skip("no block I/O throttling here (neither cgroup v1 blkio nor a v2 io controller)")


def _io_limit(limit: pathlib.Path, device: str, bytes_s: int) -> str:
  return f"{device} {bytes_s}" if limit.name.startswith("blkio") else f"{device} wbps={bytes_s}"


@contextlib.contextmanager
def frozen(mount_dir: pathlib.Path) -> Iterator[None]:
  """Every write to the filesystem at `mount_dir` blocks for the body (fsfreeze), as writes to an
  NFS server that stopped answering do; they go on once it thaws."""
  got = subprocess.run(["fsfreeze", "-f", str(mount_dir)], capture_output=True, text=True)
  if got.returncode != 0:
    pytest.skip(f"cannot freeze {mount_dir}: {got.stderr.strip() or got.returncode}")
  try:
    yield
  finally:
    subprocess.run(["fsfreeze", "-u", str(mount_dir)], capture_output=True)
