"""What an ahead-of-time compile targets: devices of a TPU topology or of captured GPUs, none present.

libtpu builds a TPU topology's devices on a CPU host (`jax.experimental.topologies`). JAX's CUDA
plugin builds compile-only GPU devices from a GPU target description (`GpuTargetConfigProto`), which
only a real GPU reports: bench/capture_gpu_target.py writes one on a GPU node. dlmscale/aot/compiler.py
compiles the trainer's steps for what this module returns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
from typing import Sequence

import jax

from dlmscale.errors import UserError, first_line


TPU_INSTALL = ("install the TPU compiler into a separate venv: python3 -m venv tpu-venv && "
               "tpu-venv/bin/pip install -r requirements-tpu.txt (jax[tpu], libtpu ~213 MB)")


def tpu_compiler_available() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(name: str) -> list[jax.Device]:
  """The devices of a TPU topology such as 'v5e:4x4' or 'v5p:2x2x2', for compiling only."""
  if not tpu_compiler_available():
    raise UserError(f"--topology={name}: compiling for TPU needs libtpu, which is not installed "
                    f"here; {TPU_INSTALL}")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu takes a host-wide lock (/tmp/libtpu_lockfile) meant for processes that drive real chips;
  # a compile-only client drives none, so several compiles (a test run beside a check) may share it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
  except Exception as e:  # noqa: BLE001 - libtpu reports an unknown name as assorted errors
    why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise UserError(f"--topology={name!r} is not a TPU topology libtpu knows ({why}); use "
                    "GENERATION:SHAPE, e.g. v5e:4x4, v5e:8x8, v5p:2x2x2, v6e:4x4, v4:2x2x1") from None


GPU_INSTALL = ("install JAX's CUDA plugin for this jax into the venv: pip install "
               "jax-cuda12-plugin==JAX_VERSION (or jax-cuda13-plugin; no GPU, driver or CUDA libraries "
               "are needed to compile)")
CAPTURE = "python bench/capture_gpu_target.py FILE (on one GPU of the kind the nodes have)"
# How this jaxlib's text-format parser names what it cannot read (logged to stderr, not raised).
_UNKNOWN_FIELD = (re.compile(r'has no field named "(\w+)"'),
                  re.compile(r'Unknown enumeration value of "\w+" for field "(\w+)"'))


def cuda_compiler_available() -> bool:
  if importlib.util.find_spec("jax_plugins") is None:  # the namespace package the plugins install into
    return False
  return any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") is not None for v in (12, 13))


def read_gpu_target(path: str) -> tuple[str, dict[str, str]]:
  """The captured target description and its '# key: value' header (device_kind, jax, ...)."""
  try:
    text = open(path, encoding="utf-8").read()
  except OSError as e:
    raise UserError(f"--gpu_target_config={path}: cannot read it ({e.strerror}); capture one with "
                    f"{CAPTURE}") from None
  meta = dict(m.groups() for m in re.finditer(r"^# ([\w.]+): (.*)$", text, re.M))
  if "gpu_device_info" not in text:
    raise UserError(f"--gpu_target_config={path} is not a GPU target description (no gpu_device_info); "
                    f"capture one with {CAPTURE}")
  return text, meta


def drop_field(text: str, name: str) -> str:
  """`text` (a text-format proto) without field `name`, scalar lines and `name { ... }` blocks."""
  text = re.sub(rf"^[ \t]*{name}:[^\n]*\n?", "", text, flags=re.M)
  while m := re.search(rf"(^|[ \t{{]){name}\s*\{{", text, flags=re.M):
    depth, i = 1, m.end()
    while depth and i < len(text):
      depth += {"{": 1, "}": -1}.get(text[i], 0)
      i += 1
    text = text[:m.start() + len(m.group(1))] + text[i:]
  return text


@contextlib.contextmanager
def _stderr_to(path: str):
  """Points file descriptor 2 at `path`: XLA's C++ parser logs its reason there and raises without it."""
  saved = os.dup(2)
  with open(path, "w") as f:
    os.dup2(f.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def gpu_topology_devices(target_config_path: str, hosts: int, gpus_per_host: int
                         ) -> tuple[list[jax.Device], list[str]]:
  """Compile-only CUDA devices for `hosts` nodes of `gpus_per_host` GPUs described by a captured
  target, and the fields of it this jaxlib does not know (dropped: its compiler cannot read them).

  A description captured with a newer jaxlib may hold fields or enum values an older parser
  rejects; those, and only those, are removed until it parses, and the caller reports them.
  """
  if not cuda_compiler_available():
    raise UserError("compiling for a GPU needs JAX's CUDA plugin, which is not installed here; "
                    + GPU_INSTALL.replace("JAX_VERSION", jax.__version__))
  text, _ = read_gpu_target(target_config_path)
  # Without a driver the plugin's CUDA version check fails and it never registers; compiling
  # needs neither the driver nor the CUDA libraries that check looks for.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  dropped: list[str] = []
  with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "stderr")
    for _ in range(64):
      try:
        with _stderr_to(log):
          topo = topologies.get_topology_desc(platform="cuda", topology=f"1x{hosts}x{gpus_per_host}",
                                              target_config=text)
        return list(topo.devices), dropped
      except Exception as e:  # noqa: BLE001 - the plugin reports a bad description as a runtime error
        said = open(log, encoding="utf-8", errors="replace").read()
        unknown = next((m.group(1) for pat in _UNKNOWN_FIELD if (m := pat.search(said))), None)
        if unknown is None or unknown in dropped:
          raise UserError(f"--gpu_target_config={target_config_path}: JAX's CUDA plugin cannot use it "
                          f"({first_line(e)}); capture it again with this jax ({jax.__version__}): "
                          f"{CAPTURE}") from None
        dropped.append(unknown)
        text = drop_field(text, unknown)
  raise UserError(f"--gpu_target_config={target_config_path}: too many fields this jaxlib does not know")


def devices_for(topology: str, gpu_target_config: str = "") -> tuple[list[jax.Device], list[str]]:
  """A TPU topology ('v5e:4x4') or 'gpu:NODESxGPUS' with a captured target: (devices, dropped fields)."""
  if not topology.startswith("gpu:"):
    return topology_devices(topology), []
  m = re.fullmatch(r"gpu:(\d+)x(\d+)", topology)
  if not m or 0 in (int(m.group(1)), int(m.group(2))):
    raise UserError(f"--topology={topology!r}: give gpu:NODESxGPUS_PER_NODE, e.g. gpu:1x8 or gpu:4x8")
  if not gpu_target_config:
    raise UserError(f"compiling for {topology} needs --gpu_target_config=FILE, the GPUs' description; "
                    f"capture it with {CAPTURE}")
  return gpu_topology_devices(gpu_target_config, int(m.group(1)), int(m.group(2)))


def host_count(devices: Sequence[jax.Device]) -> int:
  return len({d.process_index for d in devices})
