"""train_stack(configs, workdirs): runs that share a compiled shape, trained as one program.

Each member is opened exactly as a solo run (train/loop.py): built, its workdir claimed, resumed
from its own newest checkpoint; and each keeps its own loop state (loop._Loop: log rows, the
averaging window, evaluations, checkpoints, the summary), so its run directory is the one its solo
run would write. Only the train step is shared: one vmapped program (train/stack_program.py) steps
every live member at once, each on its own batch, seed key and learning-rate schedule.

- Members may have different lengths (U, epochs) and may start at different steps (WSD branches,
  each from its own trunk's checkpoint, open_run.resume) or resume at different steps after a
  kill: a member that is not stepping keeps its state (masked) while the others go on.
- A WSD trunk member saves at its own branch starts and keeps those checkpoints (its cadence and
  its Checkpointer's `protect`, as its solo run). Its branches cannot share its stack (they start
  from its checkpoints): launch/stacks.py keeps trunks and branches in stacks of their own.
- A member whose loss goes non-finite is frozen (never saved again) and reported as a solo run
  reports it (TrainingDiverged: exit 3 semantics); the rest finish.
- SIGTERM/SIGINT checkpoint every live member and stop; a re-run resumes each from its own
  checkpoint. DLMSCALE_FAULT=kill:N / term:N fire before the first step N of any member.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import parameter_overview

from dlmscale import run_dir as rundir
from dlmscale.data import pipeline
from dlmscale.errors import TrainingDiverged, UserError
from dlmscale.runtime import compile_cache, cpu_devices, multihost, sharding
from dlmscale.train import cadence as cadences
from dlmscale.train import checkpoint, loop, stops, task_curve
from dlmscale.train import open_run as restore
from dlmscale.train import stack_program
from dlmscale.train import timer as phases
from dlmscale.train.config_checks import validate


@dataclasses.dataclass
class Member:
  """One run of the stack: its solo loop state and where it stands."""
  index: int
  workdir: pathlib.Path
  run: loop.TrainRun | None = None
  lock: Any = None
  loop: Any = None  # loop._Loop
  step: int = 0
  total: int = 0
  state: str = "open"  # open -> live -> done | stopped | diverged
  error: str = ""
  summary: dict | None = None

  @property
  def live(self) -> bool:
    return self.state == "live"

  def outcome(self) -> dict:
    """What a solo run's exit would say: rc 0 (done or stopped) or 3 (diverged), and why."""
    return {"workdir": str(self.workdir), "state": self.state, "rc": 3 if self.state == "diverged" else 0,
            "error": self.error, "step": self.step, "total": self.total}


def _open(m: Member, config: ml_collections.ConfigDict, mesh, clock: phases.PhaseClock,
          allow_new_data: bool) -> None:
  """loop.train_and_evaluate's opening for one member: build -> inputs -> claim -> resume."""
  built = restore.build(config, mesh, clock)
  config = built.config
  with clock.phase("data"):
    val_set, iterator = pipeline.training_inputs(config, built.data.prepared, jax.process_index(),
                                                 jax.process_count())
    items = task_curve.build_items(config, built.data.prepared, built.setup.model_cfg.max_len)
  m.lock = loop._claim(config, m.workdir, built.data.prepared, allow_new_data)  # noqa: SLF001
  with clock.phase("checkpoint"):
    ckpt = checkpoint.Checkpointer(rundir.checkpoints_dir(m.workdir), int(config.checkpoint.keep),
                                   set_aside_unreadable=True, protect=cadences.branch_steps(config))
    try:
      restored = restore.resume(built, ckpt, m.workdir)
    except BaseException:
      ckpt.close()
      raise
  if restored.step:
    iterator.set_state(restored.data_state)
  m.run = loop.TrainRun(built, m.workdir, val_set, iterator, items, ckpt, restored)
  m.step, m.total = restored.step, built.data.total_steps


def _start(m: Member, clock: phases.PhaseClock) -> None:
  """The solo loop's state for a member (or 'done' when it had finished before)."""
  run = m.run
  if m.step >= m.total and rundir.is_finished(m.workdir):
    print(f"{m.workdir}: already finished ({m.total} steps); nothing to do.", flush=True)
    run.ckpt.close()
    m.state, m.summary = "done", rundir.read_summary(m.workdir)
    return
  primary = jax.process_index() == 0
  m.loop = loop._Loop(run, primary, clock)  # noqa: SLF001 - the solo loop's state, shared on purpose
  if primary and m.step == 0:
    overview = parameter_overview.get_parameter_overview(run.restored.state.params, include_stats=False)
    rundir.write_text_atomic(m.workdir / rundir.PARAMS, overview + "\n")
  print(f"stack member {m.index}: {m.workdir} ({m.total} steps"
        + (f", resuming at step {m.step}" if m.step else "") + ")", flush=True)
  m.state = "live"


def _close(m: Member) -> None:
  if m.run is not None:
    m.run.ckpt.close()
  if m.loop is not None:
    for f in (m.loop.log, m.loop.tb):
      if f:
        f.close()
  if m.lock:
    m.lock.release()
    m.lock = None


def train_stack(configs: list[ml_collections.ConfigDict], workdirs: list[str | pathlib.Path], *,
                allow_new_data: bool = False) -> list[dict]:
  """Trains the members to their ends (or a stop); one outcome per member (Member.outcome).
  JAX is started as train/entry.py starts it, unless this process already did."""
  start_jax(configs)
  dirs = [rundir.check_workdir(w) for w in workdirs]
  if len(set(dirs)) != len(dirs):
    raise UserError(f"a stack names one workdir twice: {[str(d) for d in dirs]}")
  members = [Member(i, d) for i, d in enumerate(dirs)]
  with phases.PhaseClock() as clock:
    mesh = make_mesh(configs[0])
    try:
      for m, c in zip(members, configs):
        _open(m, c, mesh, clock, allow_new_data)
      prog = stack_program.build([m.run.built.setup for m in members], [str(d) for d in dirs])
      for m in members:
        _start(m, clock)
      with jax.set_mesh(mesh):
        _Stack(members, prog, clock).train()
    finally:
      for m in members:
        _close(m)
  return [m.outcome() for m in members]


def start_jax(configs: list[ml_collections.ConfigDict]) -> None:
  """Checks the configs and starts JAX as train/entry.py starts it, unless this process already did;
  a stack is one process."""
  for c in configs:
    validate(c)
  if not cpu_devices.started() and not multihost.maybe_initialize():
    cpu_devices.configure(configs[0])
  if jax.process_count() > 1:
    raise UserError("a stack trains in one process; give each host its own stacks")
  compile_cache.enable()


def make_mesh(config: ml_collections.ConfigDict):
  """The members' mesh (they share one shape), with their batches checked against it."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.batch_size, mesh)
  sharding.check_batch(config.eval.batch_size, mesh, "eval.batch_size")
  if config.get("micro_batch_size", 0):
    sharding.check_batch(config.micro_batch_size, mesh, "micro_batch_size")
  return mesh


class _Stack:
  """The shared loop: one vmapped step per tick for every live member, then each member's own
  consume / evaluate / save / finish, in the order its solo loop runs them."""

  def __init__(self, members: list[Member], prog: stack_program.StackProgram, clock: phases.PhaseClock):
    self.members, self.prog, self.clock = members, prog, clock
    self.state = prog.stack([m.run.restored.state for m in members])
    setup = members[0].run.built.setup
    self.zeros = np.zeros((members[0].run.built.config.batch_size, setup.model_cfg.max_len), np.int32)
    self.pending: tuple[list[tuple[Member, int]], dict] | None = None

  def train(self) -> None:
    stop, fault = stops.StopFlag(), stops.fault_injection()
    try:
      for m in self.members:
        if m.live and m.loop.reevaluate_start:
          with self.clock.phase("eval"):
            m.loop.evaluate(m.step, self.prog.row(self.state, m.index).params)
        if m.live and m.step >= m.total:  # killed after its last save, before its summary
          self._finish(m)
      while any(m.live for m in self.members):
        if self._tick(stop, fault):
          return
    finally:
      stop.restore()

  def _tick(self, stop: stops.StopFlag, fault) -> bool:
    """One step of every live member; True when a signal stopped the stack."""
    live = [m for m in self.members if m.live]
    if fault and fault[0] in ("kill", "term") and any(m.step + 1 == fault[1] for m in live):
      os.kill(os.getpid(), {"kill": signal.SIGKILL, "term": signal.SIGTERM}[fault[0]])
    with self.clock.phase("data"):
      tokens = np.stack([next(m.run.iterator)["tokens"] if m.live else self.zeros for m in self.members])
    with self.clock.phase("train"):
      active = self.prog.replicate(np.array([m.live for m in self.members]))
      self.state, metrics = self.prog.step(self.state, self.prog.put_tokens(tokens), self.prog.run_args, active)
      self.clock.first_step(metrics, announce=True)
      for m in live:
        m.step += 1
      self._consume()
      self.pending = ([(m, m.step) for m in live], metrics)
      due = [m for m in live if m.loop.cadence.eval_due(m.step) or m.loop.cadence.save_due(m.step)
             or m.step == m.total or stop.signal is not None]
      if due:
        self._consume()
    for m in due:
      self._boundary(m, stop)
    if stop.signal is None or not any(m.live for m in self.members):
      return False
    with self.clock.phase("checkpoint"):
      for m in self.members:
        if m.live:
          m.run.ckpt.wait()
          m.state = "stopped"
    print(f"stopped by signal {stop.signal}; every member's checkpoint is saved. Re-run the same "
          "command to resume.", flush=True)
    return True

  def _consume(self) -> None:
    """Hands each live member its fetched scalars (one tick late); a non-finite one freezes it."""
    if self.pending is None:
      return
    rows, metrics = self.pending
    self.pending = None
    fetched = jax.device_get(metrics)
    for m, step in rows:
      if not m.live:
        continue
      try:
        m.loop.consume(step, {k: v[m.index] for k, v in fetched.items()})
      except TrainingDiverged as e:
        m.state, m.error = "diverged", str(e)
        print(f"error: {m.workdir}: {e} (frozen; the other members go on)", file=sys.stderr, flush=True)
        _close(m)

  def _boundary(self, m: Member, stop: stops.StopFlag) -> None:
    """The member's evaluation, checkpoint and end at its current step, as its solo loop does them."""
    if not m.live:
      return
    row = self.prog.row(self.state, m.index)
    if m.loop.cadence.eval_due(m.step):
      with self.clock.phase("eval"):
        m.loop.evaluate(m.step, row.params)
    if m.loop.cadence.save_due(m.step) or m.step == m.total or stop.signal is not None:
      with self.clock.phase("checkpoint"):
        m.loop.save(m.step, row)
    if m.step == m.total:
      self._finish(m, row)

  def _finish(self, m: Member, row=None) -> None:
    with self.clock.phase("checkpoint"):
      m.run.ckpt.wait()  # the last save is complete before the summary says the run is done
    m.summary = m.loop.finish(row if row is not None else self.prog.row(self.state, m.index))
    m.state = "done"
    _close(m)
