"""The train state, its shardings, and the jitted train and eval steps (the code benchmarks time).

Init runs under `jax.eval_shape` first, so the logical axis names of every parameter are known before
any memory is allocated; then `jit(init, out_shardings=...)` materialises each shard where it lives.
The train step is one jit with donated state. Randomness per step is `fold_in(seed_key, step)`, so a
resumed run draws exactly the masks it would have drawn without stopping.

The seed key and the learning-rate schedule's constants are arguments of the compiled step, not
constants in it (`RunArgs`): runs that differ only in seed, run length or lr compile the same program,
so the persistent compilation cache (dlmscale/runtime/compile_cache.py) compiles it once for a whole grid.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from dlmscale import objectives, run_dir
from dlmscale.errors import UserError
from dlmscale.eval import val_loss
from dlmscale.model import attention as attention_lib, sizes, transformer as model_lib
from dlmscale.objectives import orders
from dlmscale.runtime import sharding, xla_options
from dlmscale.train import accumulate, optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything compiled for one run: built once, used by the loop, the benchmark and the tests."""
  model_cfg: model_lib.ModelConfig
  mesh: Mesh
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[[TrainState, jax.Array], tuple[TrainState, dict]]
  eval_step: Callable[[Any, jax.Array, jax.Array], jax.Array]  # one batch: (params, tokens_BxL, ids_B) -> nll_B
  eval_all: Callable[[Any, jax.Array, jax.Array], jax.Array]  # a placed set: (.., _NbxBxL, _NbxB) -> nll_NbxB
  schedule: optax.Schedule
  abstract_state: Any
  compiler_options: dict[str, str] | None  # what the steps were compiled with (xla_options.py)
  apply_fn: Callable[..., jax.Array]  # (params, tokens_BxL) -> logits_BxLxV, under the axis rules

  def put_batches(self, global_NbxB: np.ndarray) -> jax.Array:
    """Whole batches every host holds in full, stacked on a leading axis (an evaluation set for
    eval_all): placed once, each batch split over the devices as a training batch is."""
    return sharding.global_batches_to_device(np.asarray(global_NbxB), self.batch_sharding)


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
  def init(rng: jax.Array) -> TrainState:
    tokens_1xL = jnp.zeros((1, seq_len), jnp.int32)
    params = nn.meta.unbox(model.init(rng, tokens_1xL)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, seq_len: int,
                    abstract_state: TrainState) -> TrainState:
  """Parameter shardings from the model's logical names; optimizer moments follow their params."""
  tokens_1xL = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
  boxed = jax.eval_shape(model.init, jax.random.key(0), tokens_1xL)["params"]
  param_sh = sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh)
  repl = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, abstract_state.opt_state, param_sh,
      transform_non_params=lambda _: repl, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return TrainState(step=repl, params=param_sh, opt_state=opt_sh)


class BoundStep:
  """The compiled train step with this run's RunArgs bound: called (and lowered) as step(state, tokens).

  The args become device arrays only when the step is first called, so lowering for devices that
  cannot hold arrays (launch.aot's compile-only TPU topologies) needs nothing but their shapes.
  """

  def __init__(self, jitted, host_args: dict, mesh: Mesh):
    self.jitted, self.host_args, self.mesh = jitted, host_args, mesh
    self._device_args = None

  @property
  def run_args(self) -> dict:
    if self._device_args is None:
      self._device_args = _replicated(self.host_args, self.mesh)
    return self._device_args

  def __call__(self, state: TrainState, tokens_BxL: jax.Array) -> tuple[TrainState, dict]:
    return self.jitted(state, tokens_BxL, self.run_args)

  def lower(self, state, tokens_BxL):
    repl = sharding.replicated(self.mesh)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=repl),
                          self.host_args)
    return self.jitted.lower(state, tokens_BxL, shapes)


def run_args(config: ml_collections.ConfigDict, total_steps: int) -> dict:
  """What the train step takes per run rather than per program: the seed key, the lr schedule."""
  key_data = np.asarray(jax.random.key_data(jax.random.key(config.seed)))
  return {"key": key_data, "schedule": optim.schedule_args(config.optim, total_steps)}


def _replicated(tree: Any, mesh: Mesh) -> Any:
  """Host arrays as global replicated arrays (also across processes, where device_put cannot)."""
  repl = sharding.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), repl, lambda idx: np.asarray(x)[idx]), tree)


def _train_step_fn(apply_fn, loss_fn, optim_cfg: ml_collections.ConfigDict, draw_fn=None, n_micro: int = 1):
  """n_micro > 1: the gradient summed over that many micro-batches (accumulate.py), one update."""
  def train_step(state: TrainState, tokens_BxL: jax.Array, args: dict) -> tuple[TrainState, dict]:
    schedule = optim.traced_schedule(optim_cfg.schedule, args["schedule"])
    tx, _ = optim.make_optimizer(optim_cfg, schedule=schedule)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(args["key"]), 1), state.step)
    batch = {"tokens": tokens_BxL}
    if n_micro > 1:
      (loss, aux), grads = accumulate.loss_and_grad(loss_fn, draw_fn, n_micro, state.params, apply_fn,
                                                    batch, rng)
    else:
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, apply_fn, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optim.global_norm(grads), "lr": schedule(state.step), **aux}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


# Config keys that reach the compiled programs only through run_args (or not at all): points that
# differ only in these share one set of programs, which this process keeps in _PROGRAMS (and may
# train in one stack, stack_program.shape_key). The cadences (eval.*, checkpoint, a WSD trunk's
# branch starts) only decide when the loop evaluates and saves; a branch's trunk and start step
# only decide where its first state is read from (open_run.resume).
RUN_KEYS = ("seed", "run_name", "unique_tokens", "epochs", "optim.lr", "optim.warmup_frac",
            "optim.warmup_steps", "optim.min_lr_ratio", "optim.decay_frac", "eval.every_steps",
            "eval.schedule", "eval.log_points", "checkpoint", "log_every_steps", "tensorboard",
            "trunk", "branch")
MAX_PROGRAMS = 8
_PROGRAMS: collections.OrderedDict[str, _Programs] = collections.OrderedDict()


@dataclasses.dataclass(frozen=True)
class _Programs:
  """What build() shares between runs of one shape: the model and the jitted (traced) programs."""
  model_cfg: model_lib.ModelConfig
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  jit_init: Callable[[jax.Array], TrainState]
  train_step: Callable
  eval_step: Callable
  eval_all: Callable
  abstract_state: Any
  apply_fn: Callable


def program_key(config: ml_collections.ConfigDict, vocab_size: int, mask_id: int, mesh: Mesh,
                compiler_options: dict[str, str] | None) -> str:
  """Everything the programs depend on: the config less RUN_KEYS, the vocabulary and the mesh."""
  flat = {k: v for k, v in run_dir.flatten(config.to_dict()).items()
          if not any(k == r or k.startswith(r + ".") for r in RUN_KEYS)}
  return json.dumps({"config": flat, "vocab": vocab_size, "mask": mask_id, "options": compiler_options,
                     "mesh": [list(mesh.axis_names), list(mesh.devices.shape),
                              [d.id for d in mesh.devices.flat]]}, sort_keys=True, default=str)


def _build_programs(config: ml_collections.ConfigDict, vocab_size: int, mask_id: int, mesh: Mesh,
                    compiler_options: dict[str, str] | None) -> _Programs:
  model_cfg = model_config_from(config, vocab_size, mesh.devices.flat[0].platform)
  model = model_lib.Transformer(model_cfg)
  tx, _ = optim.make_optimizer(config.optim, 1)  # the state's structure; the lr comes from run_args
  seq_len = config.data.seq_len
  init = _init_fn(model, tx, seq_len)
  abstract = jax.eval_shape(init, jax.random.key(0))
  shard = state_shardings(model, tx, mesh, seq_len, abstract)
  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)

  def apply_fn(params, tokens_BxL, **positions):  # positions: token-order augmentation (orders.py)
    with nn.logical_axis_rules(sharding.LOGICAL_RULES):
      return model.apply({"params": params}, tokens_BxL, **positions)

  loss_fn = objectives.make_loss_fn(config, mask_id)
  eval_fn = objectives.make_eval_fn(config, mask_id)
  train_step = jax.jit(_train_step_fn(apply_fn, loss_fn, config.optim,
                                      objectives.make_draw_fn(config, mask_id), micro_batches(config)),
                       in_shardings=(shard, batch_sh, repl), out_shardings=(shard, repl),
                       donate_argnums=0, compiler_options=compiler_options)
  eval_step = jax.jit(lambda params, tokens_BxL, ids_B: eval_fn(params, apply_fn, tokens_BxL, ids_B),
                      in_shardings=(shard.params, batch_sh, batch_sh), out_shardings=repl,
                      compiler_options=compiler_options)
  batches_sh = sharding.with_leading_axis(batch_sh)
  eval_all = jax.jit(val_loss.eval_all_fn(eval_fn, apply_fn), in_shardings=(shard.params, batches_sh, batches_sh),
                     out_shardings=repl, compiler_options=compiler_options)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shard)
  return _Programs(model_cfg=model_cfg, state_shardings=shard, batch_sharding=batch_sh,
                   jit_init=jax.jit(init, out_shardings=shard), train_step=train_step,
                   eval_step=eval_step, eval_all=eval_all, abstract_state=abstract_state, apply_fn=apply_fn)


def micro_batches(config: ml_collections.ConfigDict) -> int:
  """How many micro-batches one step's gradient sums over (1: no accumulation)."""
  micro = int(config.get("micro_batch_size", 0) or 0)
  return config.batch_size // micro if micro else 1


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int,
                      platform: str | None = None) -> model_lib.ModelConfig:
  """The model a run config describes: ladder shape (or custom), nonzero overrides, the objective;
  model.attention=auto resolved for `platform` (default: JAX's default backend)."""
  if config.objective not in model_lib.OBJECTIVES:
    raise UserError(f"unknown objective {config.objective!r}; choose one of {', '.join(model_lib.OBJECTIVES)}")
  m = config.model
  fields = ("d_model", "n_layers", "n_heads", "d_ff")
  if config.model_size == "custom":
    missing = [f for f in fields if not m[f]]
    if missing:
      raise UserError(f"model_size='custom' needs config.model.{', config.model.'.join(missing)} "
                      "set to positive values (or pick a ladder size from dlmscale/model/sizes.py)")
    shape = {f: int(m[f]) for f in fields}
  else:
    try:
      base = sizes.shape(config.model_size)
    except ValueError as e:
      raise UserError(str(e)) from None
    shape = {f: int(m[f]) if m[f] else getattr(base, f) for f in fields}
  attention, _ = attention_lib.choose(m.attention, platform or jax.default_backend(), int(config.data.seq_len),
                                      shape["d_model"] // max(shape["n_heads"], 1))
  return model_lib.validate(model_lib.ModelConfig(
      vocab_size=int(vocab_size), max_len=int(config.data.seq_len),
      causal=config.objective == "ar", dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat,
      tie_embeddings=bool(m.tie_embeddings), attention=attention,
      target_position_embedding=orders.tells_target(config), **shape))


def build(config: ml_collections.ConfigDict, vocab_size: int, mask_id: int, total_steps: int,
          mesh: Mesh, compiler_options: dict[str, str] | None | str = "auto") -> Setup:
  """compiler_options: "auto" = xla_options.for_backend(the mesh's platform); None = XLA's own.

  A later run of the same shape in this process (a launch.local worker) reuses the traced and
  compiled programs; only its run_args differ.
  """
  if compiler_options == "auto":
    compiler_options = xla_options.for_backend(mesh.devices.flat[0].platform)
  _, schedule = optim.make_optimizer(config.optim, total_steps)
  key = program_key(config, vocab_size, mask_id, mesh, compiler_options)
  progs = _PROGRAMS.pop(key, None) or _build_programs(config, vocab_size, mask_id, mesh, compiler_options)
  _PROGRAMS[key] = progs
  while len(_PROGRAMS) > MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  init_key = jax.random.fold_in(jax.random.key(config.seed), 0)
  return Setup(model_cfg=progs.model_cfg, mesh=mesh, state_shardings=progs.state_shardings,
               batch_sharding=progs.batch_sharding, init=lambda: progs.jit_init(init_key),
               train_step=BoundStep(progs.train_step, run_args(config, total_steps), mesh), eval_step=progs.eval_step,
               eval_all=progs.eval_all, schedule=schedule, abstract_state=progs.abstract_state,
               compiler_options=compiler_options, apply_fn=progs.apply_fn)


def put_batch(local_BxL: np.ndarray, setup: Setup) -> jax.Array:
  return sharding.host_batch_to_global(np.asarray(local_BxL, np.int32), setup.batch_sharding)
