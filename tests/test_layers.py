"""The layers, checked from the source: imports run one way, commands sit on top, the run directory
has one owner, and no module or function outgrows what a reader can hold."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("dlmscale", "launch", "analysis")
RUN_DIR_NAMES = ("metrics.jsonl", "summary.json", "config.json", "eval_losses")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 350, 60


def _module_files() -> dict[str, pathlib.Path]:
  out = {}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      parts = path.relative_to(REPO).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      out[name] = path
  return out


MODULES = _module_files()


def _resolve(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
  base = package[:len(package) - node.level + 1]
  return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
  """Every project module `module` imports, at any depth of its code (functions included)."""
  path = MODULES[module]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      target = _resolve(module, path, node)  # a submodule by its own name, else the package's attribute
      names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:  # `import a.b.c` imports the deepest module named
        name = name.rpartition(".")[0]
      if name and name != module:
        found.add(name)
  return found


GRAPH = {m: imports_of(m) for m in MODULES}


def is_command(module: str) -> bool:
  """A module with a `__main__` entry: `python -m` runs it, so nothing below may import it."""
  path = MODULES[module]
  return path.name == "__main__.py" or 'if __name__ == "__main__"' in path.read_text()


def _cycle() -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m: str) -> list[str] | None:
    state[m] = 1
    stack.append(m)
    for d in sorted(GRAPH[m]):
      if state.get(d) == 1:
        return stack[stack.index(d):] + [d]
      if d not in state:
        found = visit(d)
        if found:
          return found
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(GRAPH):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_the_import_graph_has_no_cycle():
  assert _cycle() is None, " -> ".join(_cycle() or [])


def test_no_library_module_imports_a_command():
  bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if not is_command(m)
         for d in deps if is_command(d)]
  assert not bad, bad


def test_the_library_imports_nothing_above_it():
  bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if m.startswith("dlmscale")
         for d in deps if d.split(".")[0] in ("launch", "analysis", "configs")]
  bad += [m for m in MODULES if m.startswith("dlmscale") and re.search(
      r"^\s*(from|import) configs\b", MODULES[m].read_text(), re.M)]
  assert not bad, bad


def test_the_graph_sees_imports_inside_functions():
  """The checker itself: a function-level import is an edge like any other."""
  src = "import os\n\ndef f():\n  from dlmscale import run_dir\n  import dlmscale.errors\n"
  path = REPO / "dlmscale" / "_probe.py"
  MODULES["dlmscale._probe"] = path
  try:
    path.write_text(src)
    assert imports_of("dlmscale._probe") == {"dlmscale.run_dir", "dlmscale.errors"}
  finally:
    path.unlink()
    del MODULES["dlmscale._probe"]


# Files outside a run directory that share a run file's name because another tool fixes it: the
# export folder's config.json is what Hugging Face reads (model/exported.py, copied into the export).
OTHER_FILES_OF_THE_SAME_NAME = {("config.json", "dlmscale/model/exported.py")}


@pytest.mark.parametrize("name", RUN_DIR_NAMES)
def test_only_run_dir_names_the_run_files(name):
  owner = MODULES["dlmscale.run_dir"]
  bad = [str(p.relative_to(REPO)) for p in MODULES.values() if p != owner and name in p.read_text()
         and (name, str(p.relative_to(REPO))) not in OTHER_FILES_OF_THE_SAME_NAME]
  assert not bad, f"{name} appears outside dlmscale/run_dir.py: {bad}"


def test_no_module_outgrows_a_reader():
  long_modules = [f"{p.relative_to(REPO)}: {n}" for p in MODULES.values()
                  if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
  long_functions = []
  for p in MODULES.values():
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          long_functions.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {n}")
  assert not long_modules and not long_functions, (long_modules, long_functions)


def _test_module_imports(path: pathlib.Path) -> list[str]:
  """The modules named test_* that a source file imports, at any depth of its code."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):  # `from test_x import y`, and `from . import test_x`
      names = ([node.module] if node.module else []) + [a.name for a in node.names if a.name.startswith("test_")]
    else:
      continue
    found += [n for n in names if any(part.startswith("test_") for part in n.split("."))]
  return found


def test_no_test_module_imports_another():
  """Shared fixtures live in tests/helpers/ (and conftest.py): a test module imports no test module."""
  tests = REPO / "tests"
  sources = [p for p in sorted(tests.rglob("*.py"))
             if p.name != "conftest.py" and (tests / "helpers") not in p.parents]
  bad = [f"{p.relative_to(REPO)} imports {name}" for p in sources for name in _test_module_imports(p)]
  assert not bad, bad


def test_the_test_import_check_sees_every_form(tmp_path):
  """The checker itself: plain, from-, relative and function-level imports of a test module."""
  probe = tmp_path / "probe.py"
  probe.write_text("import os\nimport test_a\nfrom test_b import x\nfrom . import test_c\n"
                   "from pkg.test_d import y\n\ndef f():\n  import test_e as e\n  from helpers import z\n")
  assert sorted(_test_module_imports(probe)) == ["pkg.test_d", "test_a", "test_b", "test_c", "test_e"]
