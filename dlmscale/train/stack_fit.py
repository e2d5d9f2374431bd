"""`--stack=auto`: how many runs of one compiled shape train as one stack on this device.

The stack process decides (launch/train_stack.py), where JAX runs on the device the stack trains
on. For S members it compiles the stacked train step ahead of time (stack_program.compiled_cost:
abstract shapes, nothing allocated) and reads XLA's memory analysis per device, the figures
`model.remat=auto` chooses by (aot/compiler.py StepCost); the run's eval step is compiled once the
same way (compiler.eval_cost). A stack of S needs, per device,

  need(S) = max(train:      the stacked step's peak (S states, S batches, temporaries),
                evaluation: S states resident + one member's row (its state copied out of the
                            stack for evaluation and its checkpoint, stack_program.row) + the eval
                            step's peak less the params it already counts)

Evaluation runs between steps, so the two peaks do not add up. S is the largest, at most the
candidates, with need(S) <= FRACTION x the device's memory (runtime/hardware.py device_memory: the
allocator's limit on a GPU or TPU, the host's available memory on a CPU, or
$DLMSCALE_DEVICE_MEMORY_BYTES). What FRACTION leaves over is for what the analysis does not see:
the task-curve scoring programs, the allocator's fragmentation, a batch in flight. When not even
one member fits, S = 1: a solo run would not fit either, and the device's own error will say so.
A compiler that refuses a program beyond its memory (TPU) counts as not fitting.

need(S) grows about linearly in S, so `largest` compiles all the candidates first (one compile when
they fit, the common case for small models), then one member, then interpolates: four compiles in
all where the line is exact, about 2 log2(n) at worst. The compiles go through the persistent
compilation cache (runtime/compile_cache.py), so the stack's own compile of the chosen S reads it.
The needs are kept per shape for the process, so a shape with more candidates than one group
takes (launch/stacks.py AUTO_CAP) is measured once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import ml_collections

from dlmscale.runtime import hardware
from dlmscale.train import open_run, stack, stack_program

FRACTION = 0.9  # of the device's memory a stack may need
_NEEDS: dict[tuple, dict[int, int]] = {}  # (shape, devices) -> {members: bytes per device}


@dataclasses.dataclass(frozen=True)
class Fit:
  """The decision for one group of candidates: `size` members per stack, and why."""
  size: int
  candidates: int
  need_bytes: int  # per device, for a stack of `size`
  limit_bytes: int  # FRACTION x memory_bytes
  memory_bytes: int  # per device
  source: str  # where memory_bytes is from
  tries: dict[int, int]  # members -> need, every stack size compiled

  @property
  def stacks(self) -> int:
    return -(-self.candidates // self.size)

  def line(self) -> str:
    """What the stack process prints: the choice, its footprint, the limit, what was compiled."""
    fits = self.need_bytes <= self.limit_bytes
    tried = ", ".join(f"{s}: {_size(b)}" for s, b in sorted(self.tries.items()))
    return (f"--stack=auto: {self.size} of {self.candidates} per stack, {self.stacks} stack(s) (a stack "
            f"of {self.size} needs {_size(self.need_bytes)} per device, {'within' if fits else 'more than'} "
            f"{FRACTION:g} x {_size(self.memory_bytes)} from {self.source}; needs by stack size: {tried})"
            + ("" if fits else "; not even one fits: each trains alone, and may run out of memory"))

  def record(self) -> dict:
    """What the stack's result file keeps for each member (launch/train_stack.py --result_json)."""
    return {"size": self.size, "candidates": self.candidates, "need_bytes": self.need_bytes,
            "limit_bytes": self.limit_bytes, "memory_bytes": self.memory_bytes, "fraction": FRACTION,
            "source": self.source, "tries": {str(s): b for s, b in sorted(self.tries.items())}}


def _size(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def need(setup, config: ml_collections.ConfigDict, members: int) -> int:
  """need(S) of the module docstring: bytes per device for a stack of `members` of this shape."""
  from dlmscale.aot import compiler  # noqa: PLC0415 - only --stack=auto compiles ahead of time
  try:
    train = stack_program.compiled_cost(setup, members, int(config.batch_size))
  except Exception as e:  # the TPU compiler refuses a program beyond its HBM: that is an answer
    oom = compiler.out_of_memory(str(e))
    if oom is None:
      raise
    return max(int(oom["used_bytes"]), int(oom["limit_bytes"]) + 1)
  with jax.set_mesh(setup.mesh):
    evaluation = compiler.eval_cost(setup, int(config.eval.batch_size), int(config.data.seq_len))
  state = compiler.shard_bytes(setup.abstract_state)
  params = compiler.shard_bytes(setup.abstract_state.params)
  return max(train.peak_bytes, members * state + state - params + evaluation.peak_bytes)


def largest(n: int, need_of: Callable[[int], int], limit: int, seen: dict[int, int] | None = None
            ) -> int:
  """The largest S in [1, n] with need_of(S) <= limit (need_of nondecreasing in S), 1 when none
  fits. `seen` holds the needs already known and gets every one asked."""
  seen = {} if seen is None else seen

  def fits(s: int) -> bool:
    if s not in seen:
      seen[s] = int(need_of(s))
    return seen[s] <= limit

  if fits(n):
    return n
  if n == 1 or not fits(1):
    return 1
  lo, hi, sides = 1, n, []  # fits(lo), not fits(hi)
  while hi - lo > 1:
    slope = (seen[hi] - seen[lo]) / (hi - lo)
    guess = lo + int((limit - seen[lo]) // slope) if slope > 0 else hi - 1
    if len(sides) >= 2 and sides[-1] == sides[-2]:  # the line misleads here: halve instead
      guess = (lo + hi) // 2
    s = min(max(guess, lo + 1), hi - 1)
    sides.append(fits(s))
    lo, hi = (s, hi) if sides[-1] else (lo, s)
  return lo


def choose(configs: list[ml_collections.ConfigDict]) -> Fit:
  """How many of `configs` (one compiled shape) train per stack here; starts JAX as a stack does."""
  stack.start_jax(configs)
  mesh = stack.make_mesh(configs[0])
  built = open_run.build(configs[0], mesh)  # model.remat/attention=auto resolved as the members' own
  devices = list(mesh.devices.flat)
  memory, source = hardware.device_memory(devices)
  limit = int(FRACTION * memory)
  key = (stack_program.shape_key(built.config), tuple(d.id for d in devices))
  seen = _NEEDS.setdefault(key, {})
  size = largest(len(configs), lambda s: need(built.setup, built.config, s), limit, seen)
  return Fit(size=size, candidates=len(configs), need_bytes=seen[size], limit_bytes=limit,
             memory_bytes=memory, source=source, tries=dict(seen))
