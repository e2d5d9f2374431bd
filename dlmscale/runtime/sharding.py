"""Device mesh and logical-axis rules: where each parameter and activation lives.

The model names its axes (`embed`, `mlp`, `batch`, ...); these rules map them onto a mesh with a
`data` axis (pure data parallelism) and an `fsdp` axis (data parallel over the batch, parameters and
optimizer state sharded over `embed`/`mlp`). Rules are tried in order and a mesh axis already used
by an earlier dimension is skipped, so `batch` claims both axes for activations while parameters,
which have no `batch` dimension, shard over `fsdp`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlmscale.errors import UserError

MESH_AXES = ("data", "fsdp")
DATA_AXES = ("data", "fsdp")  # the batch dimension is split over both

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", DATA_AXES),
    ("embed", "fsdp"),
    ("mlp", "fsdp"),
    ("vocab", "fsdp"),
    ("heads", None),
    ("head_dim", None),
    ("length", None),
)


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, n_devices: int) -> tuple[int, int]:
  """Resolves (-1 = the rest) and checks that the mesh tiles the devices exactly."""
  sizes = [int(mesh_cfg.data), int(mesh_cfg.fsdp)]
  if sum(s == -1 for s in sizes) > 1:
    raise UserError("only one of mesh.data / mesh.fsdp may be -1 (\"the rest\")")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh sizes must be positive or -1, got data={sizes[0]} fsdp={sizes[1]}")
  known = math.prod(s for s in sizes if s != -1)
  if n_devices % known:
    raise UserError(
        f"mesh data={sizes[0]} x fsdp={sizes[1]} does not divide the {n_devices} available devices; "
        "choose sizes whose product divides the device count (or use -1 for one of them)")
  sizes = [n_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != n_devices:
    raise UserError(
        f"mesh data={sizes[0]} x fsdp={sizes[1]} uses {math.prod(sizes)} devices but "
        f"{n_devices} are available; make the product equal the device count")
  return sizes[0], sizes[1]


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The run's mesh over `devices` (default: every device of this job; launch/aot.py passes the
  devices of a TPU topology it compiles for without owning them)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_sharding(logical_specs: Any, mesh: Mesh) -> Any:
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXES))


def with_leading_axis(s: NamedSharding) -> NamedSharding:
  """`s` with an unsharded axis in front: a stack of arrays each laid out as `s` lays out one
  (a stack's members, or the batches of an evaluation set held on the devices)."""
  return NamedSharding(s.mesh, P(None, *s.spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in DATA_AXES)


def check_batch(global_batch: int, mesh: Mesh, what: str = "batch_size",
                n_processes: int | None = None) -> None:
  """The global batch must split evenly over hosts (default: this job's) and data-parallel devices."""
  n_proc, n_dp = n_processes or jax.process_count(), data_parallel_size(mesh)
  if global_batch % n_proc:
    raise UserError(
        f"{what}={global_batch} does not divide across {n_proc} hosts; use a multiple of {n_proc}")
  if global_batch % n_dp:
    raise UserError(
        f"{what}={global_batch} does not divide across {n_dp} data-parallel devices "
        f"(mesh data x fsdp); use a multiple of {n_dp}")


def host_batch_to_global(local_BxL: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Assembles each host's slice of the batch into one global array without a host round-trip."""
  return jax.make_array_from_process_local_data(sharding, local_BxL)


def process_slice(global_B: np.ndarray, axis: int = 0) -> np.ndarray:
  """This host's rows of a batch every host holds in full: the split the data pipeline makes
  (along `axis`: 1 for batches stacked on a leading axis)."""
  n, i = jax.process_count(), jax.process_index()
  per = global_B.shape[axis] // n
  return np.take(global_B, np.arange(i * per, (i + 1) * per), axis=axis)


def global_batches_to_device(global_NbxB: np.ndarray, batch_sh: NamedSharding) -> jax.Array:
  """Whole batches stacked on a leading axis that every host holds in full (an evaluation set),
  placed once: the leading axis unsharded, each batch split as `batch_sh` splits one batch."""
  return host_batch_to_global(process_slice(global_NbxB, axis=1), with_leading_axis(batch_sh))
