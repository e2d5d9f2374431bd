"""Orbax's background work, settled so that a failed checkpoint read or write is reported once, by the
trainer, and nothing of it reaches the terminal afterwards.

Orbax reads the arrays of a restore concurrently, each on a fresh asyncio loop that it closes as soon
as the first read fails, while the other reads are still in flight. Those then die later, at garbage
collection or from a TensorStore thread ("Event loop is closed"), as tracebacks on the user's stderr
long after the one-line warning. Orbax's loops therefore let every read they started
settle before closing (`SettlingLoop`), and so do the loops of a save, so a failed read or write is
reported once, by us, and nothing is left behind. Orbax's own log records go to the error log too.

A save runs in several orbax threads at once (one per item handler, the metadata writer, the
finalizer), and orbax's wait for a save raises as soon as the first of them fails, while the others
are still writing. Each of those logs its own failure when it ends (it catches the exception, so no
thread hook sees it), so a failed wait first lets every orbax thread end (`join_orbax_threads`):
only then is the save's failure complete, all of it in the error log, and only then may the log
filter go.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import threading
import time
import traceback
import weakref


class SettlingLoop(asyncio.SelectorEventLoop):
  """An event loop whose close() first lets every task it created finish (none cancelled: a
  cancelled read or write would still call back from a TensorStore thread into the closed loop).
  A task still running after SETTLE_S is cancelled, so closing never hangs."""

  SETTLE_S = 120.0

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._started: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()

  def create_task(self, coro, **kwargs):
    task = super().create_task(coro, **kwargs)
    self._started.add(task)
    return task

  def close(self) -> None:
    if not self.is_closed() and not self.is_running():
      pending = [t for t in self._started if not t.done()]
      if pending:
        _, late = self.run_until_complete(asyncio.wait(pending, timeout=self.SETTLE_S))
        for t in late:
          t.cancel()
        if late:
          self.run_until_complete(asyncio.wait(late))
      # Every task's failure, not only the ones still running: a task that failed in the loop's
      # last turn (a sibling in a gather whose first write failed) finished after its awaiter
      # stopped listening, and asyncio would print it as "Task exception was never retrieved"
      # whenever it is collected, even after the process's one-line error. Its failure is part
      # of the one the caller reports.
      for t in list(self._started):
        if t.done() and not t.cancelled():
          t.exception()
    self._started = weakref.WeakSet()
    super().close()


class SettlingPolicy(asyncio.DefaultEventLoopPolicy):
  _loop_factory = SettlingLoop


def settle_orbax_loops() -> None:
  """Orbax's fresh loops (asyncio.new_event_loop, in the caller's and in its save threads) settle
  before they close, from the first Checkpointer on (process-wide: a loop made by asyncio.run has
  nothing left to settle, so nothing else notices)."""
  if type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy:
    asyncio.set_event_loop_policy(SettlingPolicy())


class OrbaxLogToFile(logging.Filter):
  """Orbax's own log records (its background threads' tracebacks of a failed save, its warnings on
  a resume) go to the run's checkpoint error log, not the user's terminal: the trainer reports
  what failed in one line."""

  def __init__(self, path: pathlib.Path):
    super().__init__()
    self.path = path

  def filter(self, record: logging.LogRecord) -> bool:
    if "orbax" not in record.pathname:
      return True
    if record.levelno >= logging.WARNING:
      try:
        with open(self.path, "a") as f:
          f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} orbax "
                  f"{record.levelname}: {record.getMessage()}\n")
          if record.exc_info:
            f.write("".join(traceback.format_exception(*record.exc_info)) + "\n")
      except OSError:  # a full disk or a read-only run directory
        pass
    return False


JOIN_S = 120.0  # the longest a failed save waits for orbax's other threads of that save


def join_orbax_threads(timeout_s: float = JOIN_S) -> None:
  """Waits (at most `timeout_s` in all) for every thread orbax started for a save or its
  finalization to end: orbax's wait for a save raises at the first failed thread while the others
  still write, and each logs its own failure as it ends. Only waits: orbax's own join() of such a
  thread raises that thread's failure again, which is already reported."""
  deadline = time.monotonic() + timeout_s
  for t in threading.enumerate():
    if t is not threading.current_thread() and type(t).__module__.startswith("orbax."):
      threading.Thread.join(t, max(deadline - time.monotonic(), 0.0))
