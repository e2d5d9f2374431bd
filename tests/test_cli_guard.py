"""The entry guard: user errors are exit 2 in one line, bugs exit 1 with the traceback in a file."""

from __future__ import annotations

import pathlib
import re

import pytest

from dlmscale.commands import guard as cli_guard
from dlmscale.errors import TrainingDiverged, UserError


def _raise(exc: BaseException):
  def body():
    raise exc
  return body


def test_user_error_is_exit_2_and_one_line(capsys):
  assert cli_guard.guard(_raise(UserError("bad x:\n  a -> b\nuse y")), "cmd") == 2
  assert capsys.readouterr().err == "error: bad x:; a -> b; use y\n"


def test_divergence_is_exit_3(capsys):
  assert cli_guard.guard(_raise(TrainingDiverged("loss is nan")), "cmd") == 3
  assert capsys.readouterr().err == "error: loss is nan\n"


def test_a_bug_is_exit_1_one_line_and_a_traceback_file(capsys):
  assert cli_guard.guard(_raise(ZeroDivisionError("division by zero")), "dlmscale.x") == 1
  err = capsys.readouterr().err
  first, *frames = err.strip().splitlines()
  assert "Traceback" not in err and frames and all(f.startswith("  ") for f in frames)
  assert "in body: raise exc" in frames[-1]  # the innermost frame, where it broke
  path = pathlib.Path(re.search(r"traceback is in (\S+)\.", first).group(1))
  text = path.read_text()
  assert "Traceback" in text and "ZeroDivisionError: division by zero" in text
  path.unlink()


def test_stops_are_not_swallowed(capsys):
  assert cli_guard.guard(_raise(KeyboardInterrupt()), "cmd") == 130
  with pytest.raises(SystemExit):
    cli_guard.guard(_raise(SystemExit(0)), "cmd")


def test_argparse_errors_are_one_line_exit_2(capsys):
  p = cli_guard.ArgumentParser(prog="python -m x")
  p.add_argument("--n", type=int, required=True)
  with pytest.raises(SystemExit) as e:
    p.parse_args(["--n=abc"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: argument --n: invalid int value") and len(err.splitlines()) == 1


def test_closest_keys_and_the_equals_hint():
  keys = ["optim.lr", "optim.warmup_frac", "eval.every_steps", "tensorboard"]
  assert "optim.warmup_frac" in cli_guard.closest("optim.warmup_fract", keys)
  assert cli_guard.closest("optim.warmup_frak", keys)[0] == "optim.warmup_frac"
  argv = ["prog", "--config.tensorboard", "false"]
  assert "--config.tensorboard=false" in cli_guard.stray_arguments(["false"], argv)
  assert "unexpected arguments ['x']" in cli_guard.stray_arguments(["x"], ["prog", "--a=1", "x"])
  assert cli_guard.stray_arguments([], argv) is None
