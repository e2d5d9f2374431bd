"""Writes this machine's GPU target description, so a CPU host can compile for GPUs like it.

  python bench/capture_gpu_target.py OUT.txtpb      # on a node with the GPU kind to target

JAX's CUDA plugin compiles for a GPU it does not have only from a `GpuTargetConfigProto` (compute
capability, SM count, memory, ...), and only a real GPU reports one. This script reads it
(`xla_client.get_topology_for_devices(...).target_config`), writes it as text with a '# key: value'
header (device kind, jax/jaxlib/plugin versions), then checks it in the same process: a small
bf16 program compiled for the GPU itself and for a compile-only device built from the written
description must give the same memory analysis. Needs only jax with its CUDA plugin; takes seconds.
The file is then used on any host by `launch.aot --topology=gpu:NODESxGPUS --gpu_target_config=OUT`
and `launch.slurm --aot_check --gpu_target_config=OUT` (dlmscale/aot/compiler.py).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.lib import xla_client
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P


def _versions() -> str:
  found = []
  for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt"):
    try:
      found.append(f"{name}=={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  return " ".join(found)


def _memory(devices: list) -> tuple[int, int, int]:
  """(argument, output, temp) bytes of a small sharded bf16 MLP step compiled for `devices`."""
  mesh = jax.sharding.Mesh(np.array(devices[:1]), ("x",))
  x = jax.ShapeDtypeStruct((256, 1024), jnp.bfloat16, sharding=NamedSharding(mesh, P("x")))
  w = jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
  loss = lambda w, x: jnp.mean(jnp.tanh(x @ w) ** 2)  # noqa: E731
  m = jax.jit(jax.grad(loss)).lower(w, x).compile().memory_analysis()
  return m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print("usage: python bench/capture_gpu_target.py OUT.txtpb", file=sys.stderr)
    return 2
  out = pathlib.Path(argv[1])
  gpus = [d for d in jax.devices() if d.platform == "gpu"]
  if not gpus:
    print(f"no GPU visible to jax (backend {jax.default_backend()}); run this on a GPU node", file=sys.stderr)
    return 2
  target = xla_client.get_topology_for_devices(gpus).target_config
  try:
    text = target.decode() if isinstance(target, bytes) else str(target)
  except UnicodeDecodeError:
    print(f"jax {jax.__version__} gives the target description in binary, not text; this script and "
          "dlmscale/aot/compiler.py read text: capture with a jax whose plugin gives text", file=sys.stderr)
    return 1
  header = {"device_kind": gpus[0].device_kind, "gpus_on_host": str(len(gpus)), "versions": _versions(),
            "captured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "by": "bench/capture_gpu_target.py"}
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text("".join(f"# {k}: {v}\n" for k, v in header.items()) + text + ("" if text.endswith("\n") else "\n"))
  print(f"wrote {out} ({len(text)} characters): {header['device_kind']}, {header['versions']}")

  # The check: the written description, read back, compiles like the GPU itself.
  topo = topologies.get_topology_desc(platform=gpus[0].platform, topology="1x1x1",
                                      target_config=out.read_text())
  real, described = _memory(gpus), _memory(list(topo.devices))
  print(f"compile for the GPU: argument/output/temp bytes {real}")
  print(f"compile for the description (compile-only device '{topo.devices[0].device_kind}'): {described}")
  same = real == described
  print("CHECK " + ("OK: same memory analysis" if same else "DIFFERS: the description does not reproduce the GPU compile"))
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
