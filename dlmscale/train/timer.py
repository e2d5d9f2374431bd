"""Where a run's wall time goes: data, compile, train steps, eval, checkpoint (the run summary's `phases`).

A grid of tiny models is dominated by everything around the train step, so the trainer keeps a wall
clock per phase and bench/grid_bench.py adds them up over a grid. Compilation happens inside
whatever phase first calls a jitted function; JAX reports every trace, lowering and XLA compile
(or persistent-cache load) through jax.monitoring, and that time is moved out of the enclosing
phase into `compile`, so the phases add up to the time spent inside the trainer.

The clock also marks the run's first completed train step: `startup_s`, the wall seconds from the
clock's start (the run's, or a stack's, start: data, build, restore, compiles) to then, and
`startup_compile_s`, the compile seconds within them. A launch.local worker trains several runs in
one process, so the run's start, not the process's, is where this is measured from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jax
from jax import monitoring

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
PHASES = ("data", "compile", "train", "eval", "checkpoint", "other")

_active: list[PhaseClock] = []  # the clocks currently timing (one per train_and_evaluate call)


def _on_event(event: str, duration: float, **_: object) -> None:
  if event in COMPILE_EVENTS:
    for clock in _active:
      clock.add_compile(duration)


monitoring.register_event_duration_secs_listener(_on_event)


class PhaseClock:
  """Seconds per phase; `with clock.phase("eval"):` times a block, compile time inside is split off."""

  def __init__(self):
    self.seconds = {p: 0.0 for p in PHASES}
    self._stack: list[str] = []
    self._t0 = time.perf_counter()
    self.startup: dict[str, float] | None = None  # set by first_step

  def __enter__(self) -> PhaseClock:
    _active.append(self)
    self._t0 = time.perf_counter()
    return self

  def __exit__(self, *exc: object) -> None:
    _active.remove(self)

  def add_compile(self, seconds: float) -> None:
    self.seconds["compile"] += seconds
    if self._stack:
      self.seconds[self._stack[-1]] -= seconds

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    self._stack.append(name)
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - t0
      self._stack.pop()

  def first_step(self, outputs: Any, announce: bool) -> None:
    """Marks the first train step done, once per clock: waits for `outputs` (that step's results),
    then records `startup` (and prints it when `announce`). Later calls do nothing."""
    if self.startup is not None:
      return
    jax.block_until_ready(outputs)
    self.startup = {"startup_s": round(time.perf_counter() - self._t0, 3),
                    "startup_compile_s": round(self.seconds["compile"], 3)}
    if announce:
      print(f"first train step done {self.startup['startup_s']:.1f} s after the start "
            f"({self.startup['startup_compile_s']:.1f} s of it compiling)", flush=True)

  def startup_summary(self) -> dict[str, float | None]:
    """The summary's startup keys (None when this attempt trained no step: it resumed at its end)."""
    return self.startup or {"startup_s": None, "startup_compile_s": None}

  def summary(self) -> dict[str, float]:
    """Rounded seconds per phase; `other` is the rest of the time since the clock started."""
    total = time.perf_counter() - self._t0
    timed = sum(v for k, v in self.seconds.items() if k != "other")
    out = {k: round(v, 3) for k, v in self.seconds.items() if k != "other"}
    out["other"] = round(total - timed, 3)
    out["total"] = round(total, 3)
    return out
