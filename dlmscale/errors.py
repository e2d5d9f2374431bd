"""User-facing errors: one clear message and a non-zero exit instead of a traceback."""

from __future__ import annotations



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
