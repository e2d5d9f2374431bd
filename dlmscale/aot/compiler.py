"""Compiling a run's train and eval steps for an accelerator topology this host does not have.

A pod slice is billed from the moment it is allocated, so a sharding mistake or a model that does
not fit a chip's HBM should be found before that. libtpu compiles for a TPU topology from a CPU
host (`jax.experimental.topologies`): this module builds the trainer's own steps (`program.build`:
the same init under `eval_shape`, mesh, logical-axis rules and donation) over the topology's
devices, lowers them with `ShapeDtypeStruct`s that carry the trainer's shardings, compiles them,
and reads XLA's per-device memory and cost analyses. Nothing is allocated on any device.

GPUs the same way, with one more input: JAX's CUDA plugin compiles for GPUs it does not have only
from a GPU target description (`GpuTargetConfigProto`: compute capability, SM count, memory size,
...), which only a real GPU can report. bench/capture_gpu_target.py writes one on a GPU node;
`topologies.gpu_topology_devices` builds compile-only CUDA devices from it (no GPU, driver or CUDA libraries
needed on this host, only the plugin wheel).

The figures are the compiler's: `memory_analysis()` (bytes per device) and `cost_analysis()`
(FLOPs and HBM bytes accessed per device, for the partitioned program). The roofline is a bound,
not a prediction: it ignores collectives over the interconnect and any overlap the compiler fails
to find, so real step times are longer.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dlmscale.aot import topologies
from dlmscale.data import pipeline, tokenizer
from dlmscale.errors import UserError, first_line
from dlmscale.model import flops
from dlmscale.runtime import hardware, sharding
from dlmscale.train import config_checks, steps as program

# The TPU compiler's two ways of saying a program does not fit (libtpu 0.0.42):
#   "Ran out of memory on HBM, the total memory required for HLO temporaries (16.73G) exceeds
#    available HBM (15.75G)"  and  "Used 20.33G of 15.75G hbm. Exceeded hbm capacity by 4.58G."
_OOM = (re.compile(r"required for ([\w ]+?) \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)"),
        re.compile(r"()Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm"))
_UNIT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def vocab_and_mask(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """What pipeline.prepare would report, without preparing data: a given tokenizer's vocabulary (with
  <mask>), else data.vocab_size; <mask> is the last id (data/tokenizer.py)."""
  vocab = int(config.data.vocab_size)
  if config.data.tokenizer:
    given = tokenizer.model_vocab_size(tokenizer.load(config.data.tokenizer))
    if vocab not in (0, given):
      raise UserError(f"data.tokenizer has vocabulary {given} (with <mask>) but data.vocab_size="
                      f"{vocab}; set data.vocab_size={given} or 0")
    vocab = given
  if vocab < 2:
    raise UserError(f"data.vocab_size={vocab}: set it (e.g. 50304) or give data.tokenizer")
  return vocab, vocab - 1


@dataclasses.dataclass(frozen=True)
class StepCost:
  """One compiled step, per device: XLA's memory_analysis() and cost_analysis()."""
  argument_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments: counted once
  temp_bytes: int
  code_bytes: int
  flops: float | None  # None: the compiler gives no cost analysis (CUDA, compile-only)
  bytes_accessed: float | None
  compile_s: float

  @property
  def peak_bytes(self) -> int:
    """Live at the step's peak: arguments, outputs not aliased to them, temporaries, code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


def step_cost(compiled: Any, compile_s: float) -> StepCost:
  m = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else None) if isinstance(cost, (list, tuple)) else cost
  known = lambda key: float(cost[key]) if cost and key in cost else None  # noqa: E731
  return StepCost(argument_bytes=int(m.argument_size_in_bytes), output_bytes=int(m.output_size_in_bytes),
                  alias_bytes=int(m.alias_size_in_bytes), temp_bytes=int(m.temp_size_in_bytes),
                  code_bytes=int(m.generated_code_size_in_bytes), flops=known("flops"),
                  bytes_accessed=known("bytes accessed"), compile_s=compile_s)


def shard_bytes(abstract_tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard per leaf)."""
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
  return total


@dataclasses.dataclass(frozen=True)
class Compiled:
  """A run compiled for a topology: both steps, and the state that stays resident between them."""
  model_cfg: Any
  train: StepCost
  eval: StepCost
  params_bytes: int  # per device
  state_bytes: int  # per device: params + optimizer state + step

  @property
  def eval_peak_bytes(self) -> int:
    """Eval runs while the optimizer state stays in HBM; its arguments hold only the params."""
    return self.eval.peak_bytes + self.state_bytes - self.params_bytes


def _timed_compile(jitted: Any, *args: Any) -> tuple[Any, float]:
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def compiled_cost(jitted: Any, *args: Any) -> StepCost:
  """Compiles `jitted` for `args` (ShapeDtypeStructs with shardings: nothing is allocated) and reads
  the compiler's figures; the caller holds the mesh (jax.set_mesh)."""
  return step_cost(*_timed_compile(jitted, *args))


def _batch_struct(setup: program.Setup, *shape: int) -> jax.ShapeDtypeStruct:
  """An abstract int32 batch of `shape`, laid out as the run's batches are."""
  return jax.ShapeDtypeStruct(shape, jnp.int32, sharding=setup.batch_sharding)


def eval_cost(setup: program.Setup, eval_batch: int, seq_len: int) -> StepCost:
  """The run's eval step for a batch of `eval_batch` sequences, compiled (arguments: the params)."""
  return compiled_cost(setup.eval_step, setup.abstract_state.params, _batch_struct(setup, eval_batch, seq_len),
                       _batch_struct(setup, eval_batch))


def compile_run(config: ml_collections.ConfigDict, devices: Sequence[jax.Device]) -> Compiled:
  """Builds the run's steps exactly as train.py does, over `devices`, and compiles both.

  Config errors are UserErrors; a program the compiler rejects (e.g. out of HBM) raises its error.
  """
  config_checks.validate(config)
  vocab, mask_id = vocab_and_mask(config)
  seq_len, batch, eval_batch = config.data.seq_len, config.batch_size, config.eval.batch_size
  mesh = sharding.make_mesh(config.mesh, devices)
  hosts = topologies.host_count(devices)
  sharding.check_batch(batch, mesh, n_processes=hosts)
  sharding.check_batch(eval_batch, mesh, "eval.batch_size", n_processes=hosts)
  total = pipeline.steps_for_budget(config.unique_tokens, config.epochs, batch, seq_len)
  setup = program.build(config, vocab, mask_id, total, mesh)
  with jax.set_mesh(mesh):
    train = compiled_cost(setup.train_step, setup.abstract_state, _batch_struct(setup, batch, seq_len))
    evaluation = eval_cost(setup, eval_batch, seq_len)
  return Compiled(model_cfg=setup.model_cfg, train=train, eval=evaluation,
                  params_bytes=shard_bytes(setup.abstract_state.params),
                  state_bytes=shard_bytes(setup.abstract_state))


def out_of_memory(message: str) -> dict[str, Any] | None:
  """{'what', 'used_bytes', 'limit_bytes'} when the compiler says the program exceeds HBM, else None.

  `limit_bytes` is the HBM the compiler lets a program use (v5e: 15.75 GiB of the 16 GB chip)."""
  for pattern in _OOM:
    m = pattern.search(message)
    if m:
      return {"what": m.group(1) or "total", "used_bytes": float(m.group(2)) * _UNIT[m.group(3)],
              "limit_bytes": float(m.group(4)) * _UNIT[m.group(5)]}
  return None


def roofline(flops_per_device: float, bytes_per_device: float, peak: float, bandwidth: float
             ) -> dict[str, Any]:
  """The lower bound on a step: max(compute at the bf16 peak, HBM traffic at the bandwidth)."""
  compute_s, memory_s = flops_per_device / peak, bytes_per_device / bandwidth
  return {"compute_s": compute_s, "memory_s": memory_s, "step_s": max(compute_s, memory_s),
          "bound": "compute" if compute_s >= memory_s else "memory"}


def report(config: ml_collections.ConfigDict, devices: Sequence[jax.Device], c: Compiled) -> dict:
  """The row of one compiled run: memory against HBM, FLOPs against flops.py, the roofline."""
  kind = devices[0].device_kind
  n = len(devices)
  mem, peak = hardware.published_memory(kind), hardware.lookup(hardware.PEAK_BF16, kind)
  seq_len, batch = config.data.seq_len, config.batch_size
  model_flops = flops.train_flops_per_step(c.model_cfg, seq_len, batch)
  # XLA evaluates the full L x L score matrix for causal attention too (flops.py docstring), so its
  # count is compared with the bidirectional count; model FLOPs (the MFU numerator) stay causal.
  dense_cfg = dataclasses.replace(c.model_cfg, causal=False)
  computed_flops = flops.train_flops_per_step(dense_cfg, seq_len, batch)
  xla_flops = None if c.train.flops is None else c.train.flops * n
  row: dict[str, Any] = {
      "train": dataclasses.asdict(c.train) | {"peak_bytes": c.train.peak_bytes},
      "eval": dataclasses.asdict(c.eval) | {"peak_bytes": c.eval_peak_bytes},
      "state_bytes": c.state_bytes, "params_bytes": c.params_bytes, "attention": c.model_cfg.attention,
      "peak_bytes": max(c.train.peak_bytes, c.eval_peak_bytes),
      "xla_flops_per_step": xla_flops, "model_flops_per_step": model_flops,
      "xla_over_model": None if xla_flops is None else xla_flops / model_flops,
      "xla_over_flops_py_full_attention": None if xla_flops is None else xla_flops / computed_flops,
  }
  if mem:
    row["hbm_bytes"], row["hbm_source"] = mem.hbm_bytes, mem.source
    # live devices: what the allocator will hand out (remat=auto on a GPU node), else the card's HBM
    row["memory_limit_bytes"] = hardware.allocator_limit(devices) or mem.hbm_bytes
    row["fits"] = row["peak_bytes"] <= row["memory_limit_bytes"]
  if mem and peak:
    if c.train.flops is not None and c.train.bytes_accessed is not None:
      r = roofline(c.train.flops, c.train.bytes_accessed, peak, mem.hbm_bytes_per_s)
      mfu = model_flops / (r["step_s"] * peak * n)
    else:  # no XLA cost analysis (CUDA): flops.py's count at the peak; HBM traffic unknown, and the
      # MFU would only restate flops.py's causal/full-attention ratio, so there is none
      r = roofline(computed_flops / n, 0.0, peak, mem.hbm_bytes_per_s) | {"bound": "compute, flops.py"}
      mfu = None
    row["roofline"] = r | {"tokens_per_s": batch * seq_len / r["step_s"], "mfu": mfu, "peak_bf16": peak}
  return row


REMAT_ORDER = ("none", "dots", "full")  # least recompute first


def choose_remat(config: ml_collections.ConfigDict, devices: Sequence[jax.Device]
                 ) -> tuple[str, dict[str, Any] | None, list[dict[str, Any]]]:
  """model.remat=auto: (the least recompute whose steps compile and fit a chip, its row, the tries).

  Compiles none, then dots, then full for `devices` (a topology, or the devices a run trains on)
  and stops at the first that fits their memory; 'full' when none does (its row says too_big). CPU
  devices have no memory limit to fit, so they resolve to 'none' without compiling.
  """
  if devices[0].platform == "cpu":
    return "none", None, []
  tries, row = [], None
  for remat in REMAT_ORDER:
    row = attempt(with_overrides(config, {"model.remat": remat}), devices)
    tries.append({"remat": remat, "status": row["status"], "peak_bytes": row.get("peak_bytes")})
    if row["status"] == "ok":
      return remat, row, tries
  return "full", row, tries


def attempt(config: ml_collections.ConfigDict, devices: Sequence[jax.Device]) -> dict[str, Any]:
  """One compile, as a row: status 'ok' (compiled and fits HBM), 'too_big' or 'error'.

  model.remat=auto compiles the choices in turn (choose_remat); the row is the chosen one's, with
  `remat_auto` saying what was chosen and what was tried.
  """
  if config.model.remat == "auto":
    remat, row, tries = choose_remat(config, devices)
    row = row or attempt(with_overrides(config, {"model.remat": remat}), devices)
    return row | {"remat_auto": {"chosen": remat, "tries": tries}}
  try:
    c = compile_run(config, devices)
  except UserError as e:
    return {"status": "error", "error": str(e)}
  except Exception as e:  # noqa: BLE001 - the compiler's errors are JaxRuntimeErrors of any kind
    oom = out_of_memory(str(e))
    return {"status": "too_big" if oom else "error", "error": first_line(e),
            **({"compiler_oom": oom} if oom else {})}
  row = report(config, devices, c)
  row["status"] = "ok" if row.get("fits", True) else "too_big"
  return row


def with_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set (keys must exist: the trainer's configs are locked)."""
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise UserError(f"no config key {key!r}")
    node[leaf] = value
  return out


def changes_to_try(config: ml_collections.ConfigDict, devices: Sequence[jax.Device]
                   ) -> list[tuple[str, dict[str, Any]]]:
  """Cumulative changes, smallest first; each keeps the ones before it.

  1. FSDP over every chip (mesh.data=1): same math, same FLOPs, only where the state lives.
  2. remat 'dots', then 'full': same math, more FLOPs (recomputation), less activation memory.
  3. Halve the micro-batch (micro_batch_size, gradient accumulation) until one sequence per chip:
     the global batch, the data order and the numbers stay (to float summation order).
  """
  n, hosts = len(devices), topologies.host_count(devices)
  data_n, fsdp_n = sharding.mesh_shape(config.mesh, n)
  out, cur = [], {}
  if fsdp_n < n:
    cur = {"mesh.data": 1, "mesh.fsdp": n}
    out.append((f"mesh.fsdp={n} (was data={data_n} x fsdp={fsdp_n})", dict(cur)))
  order = REMAT_ORDER
  start = order.index(config.model.remat) + 1 if config.model.remat in order else len(order)  # auto: chosen
  for remat in order[start:]:
    cur["model.remat"] = remat
    out.append((f"model.remat={remat}", dict(cur)))
  batch = int(config.batch_size)
  micro = int(config.get("micro_batch_size", 0) or 0) or batch
  while micro % 2 == 0 and (micro // 2) % n == 0 and (micro // 2) % hosts == 0:
    micro //= 2
    cur["micro_batch_size"] = micro
    out.append((f"micro_batch_size={micro} (gradient accumulation over {batch // micro} micro-batches of "
                f"{micro // n} per chip; the same run)", dict(cur)))
  return out


def find_fit(config: ml_collections.ConfigDict, devices: Sequence[jax.Device], max_tries: int
             ) -> dict[str, Any]:
  """The first change of changes_to_try that compiles and fits, with every compile made.

  The changes are cumulative, so each needs no more memory than the one before it: the largest is
  compiled first (if it does not fit, none will), then the list is bisected. That finds the same
  first fit as trying them in order, in about log2(n) + 1 compiles instead of up to n; each compile
  of a large model takes minutes on a small CPU host. At most `max_tries` compiles.
  """
  changes = changes_to_try(config, devices)
  tries: list[dict[str, Any]] = []
  rows: dict[int, dict[str, Any]] = {}

  def fits(i: int) -> bool:
    note, overrides = changes[i]
    row = attempt(with_overrides(config, overrides), devices)
    rows[i] = row
    tries.append({"change": note, "overrides": overrides, "status": row["status"],
                  **({"error": row["error"]} if "error" in row else {})})
    return row["status"] == "ok"

  if not changes or max_tries < 1 or not fits(len(changes) - 1):
    return {"found": False, "tries": tries}
  lo, hi = 0, len(changes) - 1  # changes[hi] fits; the first fit is in [lo, hi]
  while lo < hi and len(tries) < max_tries:
    mid = (lo + hi) // 2
    if fits(mid):
      hi = mid
    else:
      lo = mid + 1
  note, overrides = changes[hi]
  return {"found": True, "first": lo == hi, "change": note, "overrides": overrides, "row": rows[hi],
          "tries": tries}
