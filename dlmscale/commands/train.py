"""Entry point for one run: python -m dlmscale.main --config=configs/FILE.py[:ARGS] --workdir=DIR.

Configs are locked, so `--config.lerning_rate=...` fails instead of being silently ignored.
Re-running the same command resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys


def _exit_before_training(signum, frame) -> None:
  """SIGTERM/SIGINT before the training loop installs its own handler: exit 0 at once.

  Nothing of the run is half-written before the loop (its config record is replaced atomically, prepared
  data is built in a temporary directory and renamed), so there is nothing to save. os._exit skips
  the interpreter teardown, which crashed (SIGSEGV) when the stop arrived while XLA was starting,
  and raises nothing that an `except` in library code (or a gc callback) could swallow.
  """
  del frame
  os.write(1, f"stopped by signal {signum} before training started; re-run the same command to "
              "resume.\n".encode())
  try:
    sys.stdout.flush()
  except (OSError, RuntimeError, ValueError):  # a flush the stop interrupted: exiting regardless
    pass
  os._exit(0)


if __name__ == "__main__":  # the first instructions: a stop from here on is honoured
  for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _exit_before_training)

# pylint: disable=wrong-import-position
import json  # noqa: E402
import re  # noqa: E402

import ml_collections  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dlmscale import config_file  # noqa: E402
from dlmscale.commands import guard as cli_guard  # noqa: E402
from dlmscale import run_dir as rundir
from dlmscale.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/quickstart.py:ar",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
_ALLOW_NEW_DATA = flags.DEFINE_bool(
    "allow_new_data", False, "Resume even though the prepared data (train/val chunks, tokenizer) "
    "differs from the data the checkpoint was trained on; the new data's hashes are recorded.")

_FLAG_ERRORS = (flags.Error, KeyError, AttributeError, ValueError, TypeError, SyntaxError, OSError,
                ImportError)


def config_spec(argv: list[str]) -> str | None:
  """The value of --config in argv (either `--config=V` or `--config V`), or None."""
  for i, a in enumerate(argv):
    if a in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
    for prefix in ("--config=", "-config="):
      if a.startswith(prefix):
        return a[len(prefix):]
  return None


def config_keys(spec: str) -> list[str]:
  """Every dotted key of the config file's get_config() (for naming the closest to a typo)."""
  try:
    config = config_file.load_config(spec)[3]
    return sorted(rundir.flatten(json.loads(config.to_json_best_effort())))
  except (UserError, *_FLAG_ERRORS):  # the flag parser already failed; this only adds a hint
    return []


def _override_keys(argv: list[str]) -> list[str]:
  return [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]


def flag_error_message(e: BaseException, argv: list[str]) -> str:
  """One line for what absl / config_flags raised while parsing argv."""
  spec = config_spec(argv) or ""
  if isinstance(e, SyntaxError):
    return f"--config={spec}: not a valid Python file ({e.msg}, line {e.lineno}); {config_file.EXAMPLES}"
  if isinstance(e, AttributeError) and "get_config" in str(e):
    return f"--config={spec} defines no get_config(); {config_file.EXAMPLES}"
  if isinstance(e, (KeyError, AttributeError)):
    keys = config_keys(spec)
    unknown = [k for k in _override_keys(argv) if keys and k not in keys
               and not any(x.startswith(k + ".") for x in keys)]
    if unknown:
      near = cli_guard.closest(unknown[0], keys)
      hint = f"; closest valid keys: {', '.join(near)}" if near else ""
      return (f"unknown config key {unknown[0]!r} (--config.{unknown[0]}){hint}. All keys and their "
              "defaults are in configs/base.py")
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  last = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1]) if lines else type(e).__name__
  if len(lines) > 1 and lines[0].startswith("flag --config=") and "Traceback" in str(e):
    return f"--config={spec}: {last}"  # the config file's own get_config() refused its argument
  hint = " (check the --config.KEY names against configs/base.py)" if "--config." in last else ""
  return last + hint


def parse_flags(argv: list[str]) -> tuple[ml_collections.ConfigDict, str, bool]:
  """(config, workdir, allow_new_data) from argv; every problem is a UserError, nothing is written."""
  cli_guard.exit_on_help(flags.FLAGS, argv)
  config_file.load_config(config_spec(argv))  # the shared door: every file problem is one line here
  try:
    rest = flags.FLAGS(argv)
    config = _CONFIG.value
  except _FLAG_ERRORS as e:
    raise UserError(flag_error_message(e, argv)) from None
  why = cli_guard.stray_arguments(rest[1:], argv)
  if why:
    raise UserError(why)
  if not _WORKDIR.value or config is None:
    raise UserError("both --config=configs/FILE.py[:ARGS] and --workdir=DIR are required")
  return config, _WORKDIR.value, _ALLOW_NEW_DATA.value


def _main() -> int:
  config, workdir, allow_new_data = parse_flags(sys.argv)
  from dlmscale.train import entry  # noqa: PLC0415 - after the flags: JAX starts only for a valid run
  entry.train(config, workdir, allow_new_data=allow_new_data)
  return 0


def run() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  rc = cli_guard.guard(_main, "dlmscale.main")
  # The run is settled (finished, stopped or refused); a stop during the interpreter's teardown has
  # nothing left to stop. Python would restore the default handler for it there and the process
  # would die by the signal after a finished run, so the exit status reports what happened instead.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)
  sys.exit(rc)


if __name__ == "__main__":
  run()
