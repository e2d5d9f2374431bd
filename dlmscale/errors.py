"""User-facing errors: one clear message and a non-zero exit instead of a traceback."""

from __future__ import annotations

import errno
import os


class UserError(ValueError):
  """A problem the user can fix (bad config, missing file, budget too large); the message says how."""


def first_line(e: BaseException) -> str:
  """An exception's first line (its type when it has no text), at most 400 characters: for tables."""
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:400]


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


_CRASH_DIR: list = []  # the run directory this process trains in, once claimed


def set_crash_dir(workdir) -> None:
  """Where the entry guard also writes an internal error's traceback (run_dir.crash_file); None = nowhere."""
  _CRASH_DIR[:] = [] if workdir is None else [workdir]


def crash_dir():
  return _CRASH_DIR[0] if _CRASH_DIR else None


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "os_error_code='28'",
                  f"os_error_code='{errno.EDQUOT}'")


def no_space(e: BaseException | None) -> bool:
  """Whether `e` (or an exception it was raised from) is a full disk or an exhausted quota: an
  OSError, or the text TensorStore puts in the ValueError orbax raises for one."""
  seen = 0
  while e is not None and seen < 20:
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
      return True
    if any(t in str(e) for t in _NO_SPACE_TEXT):
      return True
    e, seen = e.__cause__ or e.__context__, seen + 1
  return False


def mount_point(path: str | os.PathLike) -> str:
  """The mount point of the filesystem holding `path` (its nearest existing ancestor's)."""
  p = os.path.abspath(path)
  while not os.path.exists(p):
    p = os.path.dirname(p)
  while not os.path.ismount(p):
    p = os.path.dirname(p)
  return p


def disk_full_line(path: str | os.PathLike, what: str) -> str:
  """One line for a full disk: which filesystem, how much is free, and what to do."""
  mount = mount_point(path)
  try:
    st = os.statvfs(mount)
    free = f"{st.f_bavail * st.f_frsize // 1024} KiB free of {st.f_blocks * st.f_frsize // 1024} KiB"
  except OSError:
    free = "free space unknown"
  return (f"no space left on the disk mounted at {mount} ({free}) while writing {path}: {what}. Free "
          "space there (or move the run directory to a larger disk) and run the same command again")
