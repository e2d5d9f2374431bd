"""python -m dlmscale.export: the exported folder reproduces the project's logits, both objectives.

The numpy forward pass (the folder's own modeling_dlmscale.py) must match within 1e-4 (float32); the
slow test loads the AR export as transformers' LlamaForCausalLM where torch and transformers exist.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, subprocess_env
from dlmscale.commands import export as export_cmd
from dlmscale.model import export
from dlmscale.train import open_run
from helpers.runs import trained_run


def _module(path):
  spec = importlib.util.spec_from_file_location(f"exported_{abs(hash(str(path)))}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _tokens(run, objective: str) -> np.ndarray:
  rng = np.random.default_rng(0)
  V, L = run.setup.model_cfg.vocab_size, run.setup.model_cfg.max_len
  x = rng.integers(0, V - 1, size=(2, L)).astype(np.int32)
  if objective == "mdm":
    x[rng.random(x.shape) < 0.4] = run.data.prepared.mask_id
  return x


@pytest.fixture(scope="module", params=["ar", "mdm"])
def exported_run(request, tmp_path_factory, tiny_corpus, data_cache):
  workdir = trained_run(tmp_path_factory, tiny_corpus, data_cache, request.param)
  out = tmp_path_factory.mktemp(f"export_{request.param}")
  export_cmd.export_run(workdir, out)
  return request.param, workdir, out


def test_numpy_forward_matches_project(exported_run):
  objective, workdir, out = exported_run
  for name in ("model.safetensors", "config.json", export.MODULE_FILE, "tokenizer_config.json"):
    assert (out / name).is_file(), name
  assert (out / "tokenizer.model").is_file() or (out / "tokenizer.json").is_file()
  config = json.loads((out / "config.json").read_text())
  assert config["causal"] == (objective == "ar")
  assert config["model_type"] == ("llama" if objective == "ar" else "dlmscale_mdm")
  run = open_run.load(workdir)
  x = _tokens(run, objective)
  want = np.asarray(jax.device_get(run.setup.apply_fn(run.params, x)), np.float32)
  got = _module(out / export.MODULE_FILE).load(out)(x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  if objective == "ar":  # causal: a later token changes no earlier logits
    y = x.copy()
    y[:, -1] = (y[:, -1] + 1) % (run.setup.model_cfg.vocab_size - 1)
    np.testing.assert_array_equal(_module(out / export.MODULE_FILE).load(out)(y)[:, :-1], got[:, :-1])


def test_command_and_bad_input(tmp_path, tiny_corpus, data_cache, tmp_path_factory):
  workdir = trained_run(tmp_path_factory, tiny_corpus, data_cache, "ar")
  p = subprocess.run([sys.executable, "-m", "dlmscale.export", f"--workdir={workdir}"],
                     capture_output=True, text=True, cwd=REPO, env=subprocess_env(), timeout=300)
  assert p.returncode == 2 and "--out" in p.stderr + p.stdout


@pytest.mark.slow
def test_transformers_loads_ar_export(exported_run):
  objective, workdir, out = exported_run
  if objective != "ar":
    pytest.skip("transformers has no bidirectional Llama: the diffusion export runs with its module file")
  torch = pytest.importorskip("torch", reason="torch is optional (requirements-eval.txt)")
  transformers = pytest.importorskip("transformers", reason="transformers is optional (requirements-eval.txt)")
  model = transformers.LlamaForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32)
  model.eval()
  run = open_run.load(workdir)
  x = _tokens(run, objective)
  want = np.asarray(jax.device_get(run.setup.apply_fn(run.params, x)), np.float32)
  with torch.no_grad():
    got = model(torch.from_numpy(x.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
