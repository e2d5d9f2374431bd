"""Multiple-choice task files: JSONL, one `{"context": str, "choices": [str, ...], "label": int}` a line.

That is the shape common evaluation-harness exports take. Every problem names its line, so a
broken export can be fixed without guessing. Blank lines are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

from dlmscale.errors import UserError
from dlmscale.eval.choices import McItem

EXAMPLE = '{"context": "The capital of France is", "choices": [" Paris", " Rome"], "label": 0}'


@dataclasses.dataclass(frozen=True)
class TextItem:
  context: str
  choices: tuple[str, ...]
  label: int
  line: int  # 1-based line number in the file


def _item(obj, where: str, line: int) -> TextItem:
  if not isinstance(obj, dict):
    raise UserError(f"{where}: expected a JSON object like {EXAMPLE}, got {type(obj).__name__}")
  missing = [k for k in ("context", "choices", "label") if k not in obj]
  if missing:
    raise UserError(f"{where}: missing key(s) {', '.join(missing)}; each line needs context, choices "
                    f"and label, e.g. {EXAMPLE}")
  ctx, choices, label = obj["context"], obj["choices"], obj["label"]
  if not isinstance(ctx, str):
    raise UserError(f"{where}: context must be a string, got {type(ctx).__name__}")
  if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
    raise UserError(f"{where}: choices must be a list of at least 2 strings")
  if isinstance(label, bool) or not isinstance(label, int):
    raise UserError(f"{where}: label must be an integer index into choices, got {label!r}")
  if not 0 <= label < len(choices):
    raise UserError(f"{where}: label {label} is out of range for {len(choices)} choices "
                    f"(valid: 0..{len(choices) - 1})")
  return TextItem(ctx, tuple(choices), label, line)


def read_task(path: str | pathlib.Path) -> list[TextItem]:
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"task file {path} does not exist (expected JSONL, one item a line: {EXAMPLE})")
  items = []
  try:
    lines = path.read_text(encoding="utf-8").split("\n")
  except UnicodeDecodeError as e:
    raise UserError(f"task file {path} is not UTF-8 text (byte {e.start}); expected JSONL, one item a "
                    f"line: {EXAMPLE}") from None
  for n, text in enumerate(lines, start=1):
    if not text.strip():
      continue
    where = f"{path} line {n}"
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected e.g. "
                      f"{EXAMPLE}") from None
    items.append(_item(obj, where, n))
  if not items:
    raise UserError(f"task file {path} holds no items (expected JSONL, one item a line: {EXAMPLE})")
  return items


def tokenize(items: Sequence[TextItem], sp, eod_id: int, max_len: int, path: str = "task"
             ) -> list[McItem]:
  """Context and each choice encoded separately; the context starts with eod (a document start)."""
  out = []
  for item in items:
    context = (eod_id, *sp.encode(item.context))
    choices = tuple(tuple(sp.encode(c)) for c in item.choices)
    for j, c in enumerate(choices):
      if not c:
        raise UserError(f"{path} line {item.line}: choice {j} is empty; every choice needs text")
      if len(c) > max_len - 1:
        raise UserError(f"{path} line {item.line}: choice {j} is {len(c)} tokens, more than the "
                        f"model's seq_len - 1 = {max_len - 1}; shorten it or use a longer-context run")
    out.append(McItem(context, choices, item.label))
  return out
