"""What a point's attempts leave for the user: how each ended and the line of its log that says why.

Each attempt appends to the point's launch log after a header line starting with ATTEMPT_MARK, so
the last attempt's output can be found again after a launcher restart.
"""

from __future__ import annotations

import pathlib
import signal

ATTEMPT_MARK = "=== "


def fmt_duration(seconds: float | None) -> str:
  if seconds is None:
    return "unknown"
  s = int(round(seconds))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def describe_exit(rc: int) -> str:
  if rc < 0:
    try:
      return f"killed by {signal.Signals(-rc).name}"
    except ValueError:
      return f"killed by signal {-rc}"
  return f"exit {rc}"


def last_error(log_path: pathlib.Path) -> str:
  """The last attempt's `error: ...` line, else its last line: the first thing a user needs."""
  try:
    text = log_path.read_text(errors="replace")
  except OSError:
    return "no log"
  attempt = text.rsplit(ATTEMPT_MARK, 1)[-1].splitlines()[2:]  # past the header and the command
  lines = [l.strip() for l in attempt if l.strip()]
  errors = [l for l in lines if l.startswith("error:") or "Error" in l]
  return (errors or lines or ["no output"])[-1][:300]
