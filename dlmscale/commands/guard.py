"""The one entry guard every command runs its body in, so no traceback ever reaches a user.

- A problem the user can fix (`UserError`, a bad flag) is exit 2 with one line: what is wrong and
  what to do instead.
- A diverged run (`TrainingDiverged`) is exit 3 with one line.
- Anything else is a bug of ours: one line naming the error and the file holding its traceback,
  then its innermost frames, exit 1. The traceback goes to a crash file in the run directory when
  the process trains in one (run_dir.crash_file), else to a file under the temp directory.
- A full disk (or a spent quota) outside a checkpoint save, which says more itself, is exit 2 with
  one line naming the disk: the user can fix it, and a re-run continues.
- Ctrl-C is exit 130 with one line. Signals are never swallowed here: `KeyboardInterrupt` and
  `SystemExit` are not `Exception`s and pass the last-resort handler untouched.
"""

from __future__ import annotations

import argparse
import difflib
import os
import pathlib
import sys
import tempfile
import time
import traceback
from typing import Callable, Iterable, Sequence

from dlmscale import run_dir
from dlmscale.errors import TrainingDiverged, UserError, crash_dir, disk_full_line, no_space

EXIT_INTERNAL, EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def one_line(message: object) -> str:
  """A message as one line: its own lines joined with '; ' (a table stays readable, a log greppable)."""
  parts = [p.strip() for p in str(message).splitlines() if p.strip()]
  return "; ".join(parts) if parts else type(message).__name__


def write_traceback(command: str, exc: BaseException) -> str:
  """The full traceback in a fresh file (never overwriting anything); returns its path.

  When the process trains in a run directory (errors.crash_dir), the file is run_dir.crash_file
  there, which outlives a node's wiped temp directory; otherwise (or if that fails) the temp directory.
  """
  text = (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} python -m {command} "
          f"{' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
  if (workdir := crash_dir()) is not None:
    try:
      path = run_dir.crash_file(workdir)
      with open(path, "x") as f:
        f.write(text)
      return str(path)
    except OSError:
      pass
  fd, path = tempfile.mkstemp(prefix=f"dlmscale-{command.replace('.', '-')}-crash-", suffix=".txt")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return path


def last_frames(exc: BaseException, n: int = 3) -> str:
  """The innermost n frames, one indented line each: where it broke, readable in a job's log."""
  frames = traceback.extract_tb(exc.__traceback__)[-n:]
  return "\n".join(f"  {pathlib.Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
                   for f in frames)


def expected_failure(e: UserError | TrainingDiverged) -> int:
  """The one line and the exit status of a failure we expect: bad input (2) or divergence (3). A
  grid worker reports its points with it too, so a point fails exactly as a solo run would."""
  print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
  return EXIT_DIVERGED if isinstance(e, TrainingDiverged) else EXIT_USER_ERROR


def guard(body: Callable[[], int | None], command: str) -> int:
  """Runs a command's body; returns the exit status the module should `sys.exit` with."""
  try:
    return int(body() or 0)
  except (UserError, TrainingDiverged) as e:
    return expected_failure(e)
  except OSError as e:
    if not no_space(e):
      return internal_error(command, e)
    what = f"{command} stopped; a run continues from its newest complete checkpoint"
    return expected_failure(UserError(disk_full_line(e.filename or os.getcwd(), what)))
  except KeyboardInterrupt:
    print(f"interrupted; {command} stopped", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  except Exception as e:  # noqa: BLE001 - the last resort: a bug becomes one line and a file
    return internal_error(command, e)


def internal_error(command: str, e: BaseException) -> int:
  path = write_traceback(command, e)
  first = one_line(e)[:300]
  print(f"error: internal error in {command} ({type(e).__name__}: {first}); the traceback is in "
        f"{path}. Please report it with that file.", file=sys.stderr, flush=True)
  if frames := last_frames(e):
    print(frames, file=sys.stderr, flush=True)
  return EXIT_INTERNAL


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one `error: ...` line and exit 2 (no usage block)."""

  def error(self, message: str):  # type: ignore[override]
    print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
  """The valid names nearest to a mistyped one: whole dotted names first, then by the last part."""
  choices = list(choices)
  near = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
  if not near:
    by_leaf: dict[str, list[str]] = {}
    for c in choices:
      by_leaf.setdefault(c.rsplit(".", 1)[-1], []).append(c)
    for m in difflib.get_close_matches(word.rsplit(".", 1)[-1], list(by_leaf), n=n, cutoff=0.6):
      near += by_leaf[m]
  return near[:n]


def stray_arguments(rest: Sequence[str], argv: Sequence[str]) -> str | None:
  """Why positional leftovers of a flag parse are an error, with the `=` fix for `--flag value`."""
  if not rest:
    return None
  first = rest[0]
  i = list(argv).index(first) if first in argv else -1
  prev = argv[i - 1] if i > 0 else ""
  if prev.startswith("--") and "=" not in prev:
    return (f"unexpected argument {first!r} after {prev}: write {prev}={first} (flags take their "
            "value after '='; a bare boolean flag means true)")
  return f"unexpected arguments {list(rest)}; options are --name=value"


def parse_absl(fv, argv: Sequence[str]) -> list[str]:
  """Parses argv into absl FlagValues `fv`; a bad flag or a stray argument is a UserError."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  exit_on_help(fv, argv)
  try:
    rest = fv(list(argv))
  except flags.Error as e:
    raise UserError(f"{one_line(str(e).strip().splitlines()[-1])} (see --help)") from None
  why = stray_arguments(rest[1:], argv)
  if why:
    raise UserError(why)
  return rest


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull")


def exit_on_help(fv, argv: Sequence[str]) -> None:
  """`--help` prints the flags and exits 0 (absl's app.run would; we parse without it)."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(fv.get_help())
    sys.exit(0)


def parse_run_flags(define: Callable, argv: Sequence[str]):
  """absl flags into a private registry; a bad flag is a UserError, not a traceback."""
  fv = define()
  parse_absl(fv, argv)
  if not fv.workdir:
    raise UserError("--workdir=RUN is required (the directory of a trained run)")
  return fv


def cli_main(fn: Callable[[], int | None]) -> int:
  """Runs a command's body in the entry guard (`guard`), named as `python -m` ran it: exit 2 for a
  UserError, 3 for divergence, 1 plus a traceback file for a bug; never a traceback on the terminal."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return guard(fn, getattr(spec, "name", None) or pathlib.Path(sys.argv[0]).stem or "dlmscale")
