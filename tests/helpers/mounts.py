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
