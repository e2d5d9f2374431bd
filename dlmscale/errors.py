"""User-facing errors: one clear message and a non-zero exit instead of a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(ValueError):
  """A problem the user can fix (bad config, missing file, budget too large); the message says how."""


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def cli_main(fn: Callable[[], int | None]) -> int:
  """Runs a command's body; a UserError becomes `error: ...` on stderr and exit status 2."""
  try:
    return int(fn() or 0)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
