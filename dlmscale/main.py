"""Entry point for one run: python -m dlmscale.main --config=configs/FILE.py[:ARGS] --workdir=DIR.

Configs are locked, so `--config.lerning_rate=...` fails instead of being silently ignored.
Re-running the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys

from absl import flags
from ml_collections import config_flags

from dlmscale.errors import TrainingDiverged, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/quickstart.py:ar",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")

EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


class _StoppedEarly(Exception):
  """SIGTERM/SIGINT before the training loop took over signals: nothing new to save."""


def _stop_early(signum, frame) -> None:
  del frame
  raise _StoppedEarly(signum)


def _main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; use --config=... --workdir=...", file=sys.stderr)
    return EXIT_USER_ERROR
  try:
    from dlmscale import cpu_devices, multihost, train  # noqa: PLC0415 - after flags, before JAX starts
    if not multihost.maybe_initialize():
      cpu_devices.configure(_CONFIG.value)
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except _StoppedEarly as e:
    print(f"stopped by signal {e.args[0]} before training started; re-run the same command to resume.",
          flush=True)
    return 0
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_DIVERGED
  del summary
  return 0


def _flag_errors_exit() -> None:
  """absl reports a bad flag or config key with a traceback; users get one line instead."""
  try:
    flags.FLAGS(sys.argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    print(f"error: {msg}\n(check the --config.KEY names against configs/base.py)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  if not _WORKDIR.value or _CONFIG.value is None:
    print("error: both --config=configs/FILE.py[:ARGS] and --workdir=DIR are required", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Until the loop installs its own handler (checkpoint, then exit), a stop signal exits cleanly.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _stop_early)
  _flag_errors_exit()
  sys.exit(_main(sys.argv[:1]))


if __name__ == "__main__":
  run()
