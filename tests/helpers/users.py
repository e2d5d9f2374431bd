"""An unprivileged user for the cases root cannot test as itself (root may write anywhere, so a
read-only directory is not read-only to it): CI runs as root and still exercises them."""

from __future__ import annotations

import os
import pathlib
import pwd
import subprocess
import tempfile

NAME = "dlmscale-test"


def unprivileged_ids() -> tuple[int, int] | None:
  """(uid, gid) of a user created for the tests when running as root (None when not root, or when
  no user can be made); a process running as anyone else is unprivileged already."""
  if os.geteuid() != 0:
    return None
  try:
    entry = pwd.getpwnam(NAME)
  except KeyError:
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                           NAME], capture_output=True, text=True)
    if made.returncode != 0:
      return None
    entry = pwd.getpwnam(NAME)
  return entry.pw_uid, entry.pw_gid


def open_directory(prefix: str) -> pathlib.Path:
  """A fresh directory anyone may enter (pytest's own temporary directories are root's alone)."""
  path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
  path.chmod(0o755)
  return path
