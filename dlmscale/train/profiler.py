"""config.profile_steps = "A:B": a jax.profiler trace of training steps A..B into the run directory.

The trace (run_dir.profile_dir: plugins/profile/<time>/<host>.xplane.pb) opens in TensorBoard's
profile plugin (xprof) or Perfetto. Steps are 1-based and inclusive, as the metrics rows count them;
the trace stops after step B's results are ready, so it holds the whole of every step in the window.
Every process traces its own devices (the file names carry the host).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax

from dlmscale import run_dir
from dlmscale.errors import UserError


def parse(spec: str) -> tuple[int, int] | None:
  """"A:B" -> (A, B); "" -> None. UserError for anything else."""
  spec = str(spec or "").strip()
  if not spec:
    return None
  try:
    a, b = (int(x) for x in spec.split(":"))
  except ValueError:
    raise UserError(f"config.profile_steps={spec!r}: expected A:B, two step numbers (e.g. 10:12)") from None
  if not 1 <= a <= b:
    raise UserError(f"config.profile_steps={spec!r}: need 1 <= A <= B")
  return a, b


class ProfileWindow:
  """before(step) starts the trace at step A; after(step, state) stops it after step B."""

  def __init__(self, spec: str, workdir: str | pathlib.Path):
    self.window = parse(spec)
    self.dir = run_dir.profile_dir(workdir)
    self.active = False

  def before(self, step: int) -> None:
    if self.window and step == self.window[0] and not self.active:
      self.dir.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.dir))
      self.active = True

  def after(self, step: int, state: Any) -> None:
    if self.active and step >= self.window[1]:
      self.stop(state)

  def stop(self, state: Any = None) -> None:
    if self.active:
      if state is not None:
        jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      print(f"profile of steps {self.window[0]}..{self.window[1]} written to {self.dir}", flush=True)
