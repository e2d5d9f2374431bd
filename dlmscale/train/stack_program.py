"""The compiled program of a stack: the run's own train step under jax.vmap over a leading run axis.

Runs that share a compiled shape (the config less steps.RUN_KEYS: same model, objective, batch,
sequence length, vocabulary, dtype, optimizer settings) build the very same jitted step in
steps.build; what differs between them (seed key, learning-rate schedule constants) is already an
argument of that step (steps.run_args), so a stack stacks those arguments along with the params,
the optimizer state and the batches. Each member's row of the vmapped step computes exactly what
its solo step computes; members that are finished, frozen (non-finite) or not due keep their
state through a per-member mask, so members of different lengths share one program.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from dlmscale import run_dir
from dlmscale.errors import UserError
from dlmscale.runtime import sharding
from dlmscale.train import steps as program


def shape_key(config: ml_collections.ConfigDict) -> str:
  """What decides a run's compiled programs: its config less the keys that reach them only as
  arguments (steps.RUN_KEYS). Points with equal keys may train in one stack."""
  flat = {k: v for k, v in run_dir.flatten(config.to_dict()).items()
          if not any(k == r or k.startswith(r + ".") for r in program.RUN_KEYS)}
  return json.dumps(flat, sort_keys=True, default=str)


def shape_difference(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> str:
  """The first key (with both values) in which two configs' shape keys differ, or ''."""
  fa, fb = json.loads(shape_key(a)), json.loads(shape_key(b))
  for k in sorted(set(fa) | set(fb)):
    if fa.get(k) != fb.get(k):
      return f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}"
  return ""


@dataclasses.dataclass(frozen=True)
class StackProgram:
  """The jitted stacked step and what it needs: (state_S, tokens_SxBxL, args_S, active_S) ->
  (state_S, metrics_S), with the per-member states' shardings to move rows in and out."""
  step: Callable
  run_args: Any  # the members' RunArgs stacked on axis 0, on the device
  replicate: Callable[[Any], Any]  # host arrays -> global replicated arrays (the active mask)
  member_shardings: Any
  state_shardings: Any
  tokens_sharding: NamedSharding

  def stack(self, states: list) -> Any:
    """Member states (solo layout) -> one stacked state."""
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    return jax.device_put(stacked, self.state_shardings)

  def row(self, state_S: Any, i: int) -> Any:
    """Member i's state in its solo layout (what its checkpoint and evaluation take)."""
    return jax.device_put(jax.tree.map(lambda x: x[i], state_S), self.member_shardings)

  def put_tokens(self, tokens_SxBxL: np.ndarray) -> jax.Array:
    return sharding.host_batch_to_global(np.asarray(tokens_SxBxL, np.int32), self.tokens_sharding)


def _masked_step(train_step: Callable) -> Callable:
  def step(state_S, tokens_SxBxL, args_S, active_S):
    new_S, metrics_S = jax.vmap(train_step)(state_S, tokens_SxBxL, args_S)
    keep = lambda n, o: jnp.where(active_S.reshape(active_S.shape + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(keep, new_S, state_S), metrics_S
  return step


def build(setups: list[program.Setup], names: list[str]) -> StackProgram:
  """The stacked program of members whose solo programs are one and the same (steps.build cached
  them under one program key); else a UserError naming the first member that differs."""
  first = setups[0].train_step
  for s, name in zip(setups[1:], names[1:]):
    if s.train_step.jitted is not first.jitted:
      raise UserError(f"{name} does not share the compiled program of {names[0]} (another shape, "
                      "mesh or vocabulary); a stack holds runs of one shape only")
  repl = sharding.replicated(setups[0].mesh)
  host_args = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                           *[s.train_step.host_args for s in setups])
  replicate = lambda tree: jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), repl, lambda idx: np.asarray(x)[idx]), tree)
  return StackProgram(step=_jitted(setups[0]), run_args=replicate(host_args), replicate=replicate,
                      member_shardings=setups[0].state_shardings,
                      state_shardings=jax.tree.map(sharding.with_leading_axis, setups[0].state_shardings),
                      tokens_sharding=sharding.with_leading_axis(setups[0].batch_sharding))


def _jitted(setup: program.Setup) -> Callable:
  """The stacked step of `setup`'s shape, for any number of members (the run axis's length)."""
  state_sh = jax.tree.map(sharding.with_leading_axis, setup.state_shardings)
  repl = sharding.replicated(setup.mesh)
  return jax.jit(_masked_step(setup.train_step.jitted.__wrapped__),  # the solo step before its jit
                 in_shardings=(state_sh, sharding.with_leading_axis(setup.batch_sharding), repl, repl),
                 out_shardings=(state_sh, repl), donate_argnums=0, compiler_options=setup.compiler_options)


def abstract_inputs(setup: program.Setup, members: int, batch: int) -> tuple:
  """The stacked step's arguments for `members` runs of `setup`'s shape, as ShapeDtypeStructs with
  their shardings: what compiling it ahead of time needs (no array is made)."""
  def stacked(shape, dtype, s):
    return jax.ShapeDtypeStruct((members, *shape), dtype, sharding=s)
  repl = sharding.replicated(setup.mesh)
  lead = sharding.with_leading_axis
  state = jax.tree.map(lambda x: stacked(x.shape, x.dtype, lead(x.sharding)), setup.abstract_state)
  tokens = stacked((batch, setup.model_cfg.max_len), np.int32, lead(setup.batch_sharding))
  args = jax.tree.map(lambda x: stacked(np.shape(x), np.asarray(x).dtype, repl), setup.train_step.host_args)
  return state, tokens, args, jax.ShapeDtypeStruct((members,), np.bool_, sharding=repl)


def compiled_cost(setup: program.Setup, members: int, batch: int) -> Any:
  """The stacked step for `members` runs compiled ahead of time (nothing allocated): XLA's memory
  analysis per device, as aot/compiler.py reads it for a solo step (a StepCost)."""
  from dlmscale.aot import compiler  # noqa: PLC0415 - only --stack=auto compiles ahead of time
  with jax.set_mesh(setup.mesh):
    return compiler.compiled_cost(_jitted(setup), *abstract_inputs(setup, members, batch))
