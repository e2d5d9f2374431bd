"""The one door through which a config file enters: every command that takes `--config` loads it here.

A config file is Python with `get_config(arg)` (and, for a grid, `sweep(arg)`). Whatever is wrong
with it (not there, a directory, not Python, a syntax error, no `get_config`, no `sweep` where a
grid is needed, an argument the file refuses) is one UserError naming the file and the fix, raised
before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import sys
import types
from typing import Any, Callable

from dlmscale.errors import UserError, first_line

EXAMPLES = "e.g. --config=configs/base.py or --config=configs/quickstart.py:objective=mdm"
GRID_HELP = ("a grid file defines get_config(arg) for one point and sweep(arg) returning a list of "
             "override dicts (see configs/datacons.py)")


def split_spec(spec: str | None) -> tuple[pathlib.Path, str | None]:
  """'configs/datacons.py:scale=cpu' -> (absolute path, 'scale=cpu'), checked to be a Python file."""
  if not spec:
    raise UserError(f"--config=configs/FILE.py[:ARGS] is required ({EXAMPLES})")
  name, sep, arg = spec.partition(":")
  path = pathlib.Path(name).expanduser()
  if not path.exists():
    raise UserError(f"--config={spec}: {path} does not exist ({EXAMPLES}; paths are relative to "
                    f"{pathlib.Path.cwd()})")
  if path.is_dir():
    raise UserError(f"--config={spec}: {path} is a directory, not a Python config file with "
                    f"get_config(); give a file in it ({EXAMPLES})")
  if not path.is_file() or path.suffix != ".py":
    raise UserError(f"--config={spec}: {path} is not a Python config file with get_config() "
                    f"({EXAMPLES})")
  return path.resolve(), (arg if sep and arg else None)


def load_module(path: pathlib.Path) -> types.ModuleType:
  """The config file imported as a module of its own (once per path and process)."""
  name = f"_dlmscale_config_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise UserError(f"--config={path}: Python cannot load it as a module; give a .py config file")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    del sys.modules[name]
    raise UserError(f"--config={path}: not a valid Python file ({e.msg}, line {e.lineno}); fix "
                    "that line") from None
  except UserError:
    del sys.modules[name]
    raise
  except Exception as e:  # noqa: BLE001 - the user's file failed to import: theirs to fix
    del sys.modules[name]
    raise UserError(f"--config={path}: importing it failed ({type(e).__name__}: {first_line(e)}); "
                    "fix the file") from None
  return module


def function(module: types.ModuleType, path: pathlib.Path, name: str, why: str) -> Callable:
  fn = getattr(module, name, None)
  if not callable(fn):
    raise UserError(f"--config={path} defines no {name}(arg), so it is not {why}")
  return fn


def call(fn: Callable, path: pathlib.Path, arg: str | None) -> Any:
  """`fn(arg)` of a config file; an argument it refuses is the user's to fix, said in one line."""
  try:
    return fn(arg)
  except UserError:
    raise
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise UserError(f"--config={path}{':' + arg if arg else ''}: {fn.__name__}() refused the "
                    f"argument ({type(e).__name__}: {first_line(e)}); see the file's docstring for "
                    "what it takes") from None


def load_config(spec: str) -> tuple[pathlib.Path, str | None, types.ModuleType, Any]:
  """(path, arg, module, get_config(arg)) for a one-run config file."""
  path, arg = split_spec(spec)
  module = load_module(path)
  config = call(function(module, path, "get_config", f"a config file ({EXAMPLES})"), path, arg)
  return path, arg, module, config


def load_grid(spec: str) -> tuple[pathlib.Path, str | None, Any, list[dict[str, Any]]]:
  """(path, arg, get_config(arg), sweep(arg)) for a grid file."""
  path, arg = split_spec(spec)
  module = load_module(path)
  get_config = function(module, path, "get_config", f"a grid config; {GRID_HELP}")
  sweep = function(module, path, "sweep", f"a grid config; {GRID_HELP}")
  config = call(get_config, path, arg)
  points = call(sweep, path, arg)
  if not points:
    raise UserError(f"--config={path}{':' + arg if arg else ''}: sweep() returned no points; check "
                    "the argument")
  return path, arg, config, list(points)
