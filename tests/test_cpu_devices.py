"""One CPU device per core for single-process runs, unless the user chose: the count divides both
batches, and a process that configures it really gets that many devices."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from configs import base
from conftest import REPO, subprocess_env
from dlmscale.runtime import cpu_devices


def test_choose_divides_every_batch_and_respects_the_limits():
  assert cpu_devices.choose(2, (32, 64)) == 2
  assert cpu_devices.choose(6, (16, 64)) == 4  # 6 and 5 do not divide 16
  assert cpu_devices.choose(4, (6, 64)) == 2
  assert cpu_devices.choose(2, (3, 64)) == 1
  assert cpu_devices.choose(64, (64, 64)) == cpu_devices.MAX_DEVICES
  assert cpu_devices.choose(0, (8,)) == 1


def _configure_in_child(env_extra: dict[str, str], **overrides) -> dict:
  code = (
      "import json, sys\n"
      "from configs import base\n"
      "from dlmscale.runtime import cpu_devices\n"
      "import jax\n"
      "c = base.get_config()\n"
      "for k, v in json.loads(sys.argv[1]).items():\n"
      "  node = c\n"
      "  *path, leaf = k.split('.')\n"
      "  for p in path: node = node[p]\n"
      "  node[leaf] = v\n"
      "n = cpu_devices.configure(c)\n"
      "print(json.dumps({'set': n, 'devices': jax.device_count(), 'cores': cpu_devices.usable_cores()}))\n")
  env = subprocess_env(**env_extra)
  env.pop("JAX_NUM_CPU_DEVICES", None) if "JAX_NUM_CPU_DEVICES" not in env_extra else None
  proc = subprocess.run([sys.executable, "-c", code, json.dumps(overrides)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_single_process_run_gets_one_device_per_core():
  out = _configure_in_child({}, batch_size=32)
  want = cpu_devices.choose(out["cores"], (32, base.get_config().eval.batch_size))
  assert out["devices"] == want and out["set"] == (want if want > 1 else None)


@pytest.mark.parametrize("env_extra,overrides", [
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, {}),
    ({"JAX_NUM_CPU_DEVICES": "1"}, {}),
    ({}, {"mesh.data": 1}),
    ({}, {"mesh.fsdp": 2}),
])
def test_the_users_choice_is_left_alone(env_extra, overrides):
  out = _configure_in_child(env_extra, **overrides)
  assert out["set"] is None
  if "XLA_FLAGS" in env_extra:
    assert out["devices"] == 3
  elif env_extra or overrides:
    assert out["devices"] == 1
