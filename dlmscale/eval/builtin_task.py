"""A multiple-choice task made from the validation split: no download, so every run reports one.

Item: a window of one validation document; the context is its first part and the true choice the
tokens that follow it. The other choices are the same-position continuations of windows of OTHER
documents, so every choice is real text of the same length and only the fit to the context tells
them apart. Everything is drawn from `seed`, so the task is the same for every run on the same data.

Windows start at multiples of the window length inside a document (never crossing its end-of-
document token), contexts fill the window up to min(seq_len, MAX_WINDOW) tokens, so all rows of the
task have one length and are scored without padding.
"""

from __future__ import annotations

import numpy as np

from dlmscale.errors import UserError
from dlmscale.eval.choices import McItem

MAX_WINDOW = 256  # context + continuation, tokens
DEFAULT_ITEMS = 200
DEFAULT_CHOICES = 4


def default_lengths(seq_len: int) -> tuple[int, int]:
  """(context, continuation) lengths: a continuation of seq_len/8 tokens (4..32), the rest context."""
  window = min(seq_len, MAX_WINDOW)
  cont = int(min(32, max(4, seq_len // 8)))
  if window - cont < 1:
    raise UserError(f"seq_len={seq_len} is too short for the built-in task (needs > {cont} tokens)")
  return window - cont, cont


def documents(stream: np.ndarray, eod_id: int) -> list[tuple[int, int]]:
  """[start, end) of each document in a packed token stream (its eod excluded)."""
  ends = np.flatnonzero(stream == eod_id)
  starts = np.concatenate([[0], ends + 1])
  ends = np.concatenate([ends, [len(stream)]])
  return [(int(s), int(e)) for s, e in zip(starts, ends) if e > s]


def make_task(val_chunks_NxL: np.ndarray, eod_id: int, seq_len: int, *, n_items: int = DEFAULT_ITEMS,
              n_choices: int = DEFAULT_CHOICES, seed: int = 0) -> list[McItem]:
  """Up to n_items items (fewer when the split holds fewer windows), deterministic in `seed`."""
  if n_choices < 2:
    raise UserError(f"the built-in task needs at least 2 choices, got {n_choices}")
  ctx, cont = default_lengths(seq_len)
  window = ctx + cont
  stream = np.asarray(val_chunks_NxL).reshape(-1)
  wins, doc_of = [], []  # window starts and the document each lies in
  for d, (s, e) in enumerate(documents(stream, eod_id)):
    for w in range(s, e - window + 1, window):
      wins.append(w)
      doc_of.append(d)
  wins_W, doc_W = np.asarray(wins, np.int64), np.asarray(doc_of, np.int64)
  if len(set(doc_of)) < 2:
    raise UserError(
        f"the validation split has {len(set(doc_of))} document(s) of at least {window} tokens; the "
        "built-in task needs 2 or more. Hold out more validation data (data.val_fraction or "
        "data.val_tokens) or use a shorter data.seq_len")
  conts = {int(w): tuple(int(x) for x in stream[w + ctx:w + window]) for w in wins_W}
  rng = np.random.default_rng(seed)
  items = []
  for w_idx in rng.permutation(len(wins_W)):
    if len(items) == n_items:
      break
    w, d = int(wins_W[w_idx]), int(doc_W[w_idx])
    others = wins_W[doc_W != d]
    choices = [conts[w]]
    picks = rng.choice(len(others), size=min(len(others), 8 * n_choices), replace=False)
    for o in others[picks]:  # distinct texts only, so a task never has a duplicate choice
      if conts[int(o)] not in choices:
        choices.append(conts[int(o)])
      if len(choices) == n_choices:
        break
    if len(choices) < n_choices:
      continue
    label = int(rng.integers(n_choices))
    choices[0], choices[label] = choices[label], choices[0]
    items.append(McItem(context=tuple(int(x) for x in stream[w:w + ctx]), choices=tuple(choices),
                        label=label))
  if not items:
    raise UserError(f"the validation split has too few distinct windows of {window} tokens for a "
                    f"{n_choices}-choice task; hold out more validation data")
  return items
