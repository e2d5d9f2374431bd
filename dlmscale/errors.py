"""User-facing errors: one clear message and a non-zero exit instead of a traceback."""

from __future__ import annotations

import pathlib
import sys
from typing import Callable


class UserError(ValueError):
  """A problem the user can fix (bad config, missing file, budget too large); the message says how."""


def first_line(e: BaseException) -> str:
  """An exception's first line (its type when it has no text), at most 400 characters: for tables."""
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:400]


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def cli_main(fn: Callable[[], int | None], command: str | None = None) -> int:
  """Runs a command's body in the entry guard (dlmscale/cli_guard.py): exit 2 for a UserError,
  3 for divergence, 1 plus a traceback file for a bug; never a traceback on the terminal."""
  from dlmscale.commands import guard as cli_guard  # pylint: disable=g-import-not-at-top  (cli_guard imports us)
  return cli_guard.guard(fn, command or _command_name())


def _command_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return getattr(spec, "name", None) or pathlib.Path(sys.argv[0]).stem or "dlmscale"
