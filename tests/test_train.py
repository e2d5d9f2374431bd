"""The trainer: one golden step, loss falls, and kill/resume, SIGTERM and sharded runs are exact."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import re
import pytest

from conftest import config_flags_for, subprocess_env, tiny_config
from dlmscale import objectives
from dlmscale.train import optim
from dlmscale.train import steps as program
from dlmscale import run_dir as rundir
from dlmscale.runtime import sharding
from dlmscale.train import loop as train
from dlmscale.data import pipeline
from dlmscale.model import transformer as model_lib
from helpers.runs import final_params as _final_params, losses as _losses, run_main as _main

GOLDEN = pathlib.Path(__file__).parent / "golden" / "one_step.json"


def _one_step(cfg) -> dict:
  prepared = pipeline.prepare(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, total_steps=10, mesh=mesh)
  tokens_BxL = np.asarray(prepared.train_chunks[:cfg.batch_size], np.int32)
  with jax.set_mesh(mesh):
    state = setup.init()
    params0 = jax.tree.map(np.asarray, state.params)
    _, metrics = setup.train_step(state, program.put_batch(tokens_BxL, setup))
  return {"metrics": jax.device_get(metrics), "params0": params0, "tokens": tokens_BxL,
          "prepared": prepared}


def _numpy_nll_LxV(logits_BxLxV: np.ndarray, targets_BxL: np.ndarray, mask_id: int) -> np.ndarray:
  """-log softmax(logits)[target] in float64 numpy, the mask id removed from the support."""
  z = np.asarray(logits_BxLxV, np.float64).copy()
  z[..., mask_id] = -np.inf
  lse = np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1)) + z.max(-1)
  return lse - np.take_along_axis(z, targets_BxL[..., None], -1)[..., 0]


def _numpy_step1_loss(cfg, objective: str, logits_of, tokens_BxL: np.ndarray, mask_id: int) -> float:
  """Step 1's loss from the model's logits alone, the objectives written out again in numpy.

  AR: mean next-token NLL over L - 1 predictions. MDM: mean over rows of (1/t_b) x the masked NLL sum
  / L, with t_b and the mask drawn as the trainer documents it (step key fold_in(fold_in(key(seed),
  1), step 0), one stratified t per row, clipped at mdm.t_min, each token masked with prob. t_b)."""
  if objective == "ar":
    return float(np.mean(_numpy_nll_LxV(logits_of(tokens_BxL)[:, :-1], tokens_BxL[:, 1:], mask_id)))
  B, L = tokens_BxL.shape
  rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 1), 0)
  rng_t, rng_mask = jax.random.split(rng)
  u = float(jax.random.uniform(rng_t))
  t_B = np.maximum(np.mod(u + np.arange(B, dtype=np.float32) / B, 1.0), cfg.mdm.t_min)
  mask_BxL = np.asarray(jax.random.uniform(rng_mask, (B, L))) < t_B[:, None]
  x_t = np.where(mask_BxL, mask_id, tokens_BxL)
  nll = _numpy_nll_LxV(logits_of(x_t), tokens_BxL, mask_id)
  return float(np.mean(np.sum(np.where(mask_BxL, nll, 0.0), -1) / t_B / L))


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_golden_one_step(objective, tiny_corpus, data_cache):
  """Step 1's loss equals a numpy NLL of the model's own logits, its grad norm an autodiff of the
  library loss, and both the recorded golden values (which must match, not be skipped).

  Regenerate the golden file (after an intended numerics change) with DLMSCALE_REGOLD=1.
  """
  cfg = tiny_config(tiny_corpus, data_cache, objective)
  assert cfg.mdm.schedule == "linear"  # the numpy MDM loss below writes out w(t) = 1/t
  out = _one_step(cfg)
  m, prepared = out["metrics"], out["prepared"]
  model = model_lib.Transformer(program.model_config_from(cfg, prepared.vocab_size))
  apply_fn = lambda p, t: model.apply({"params": p}, t)
  logits_of = lambda t: np.asarray(jax.jit(apply_fn)(out["params0"], t))
  want = _numpy_step1_loss(cfg, objective, logits_of, out["tokens"], prepared.mask_id)
  np.testing.assert_allclose(m["loss"], want, rtol=2e-5)
  loss_fn = objectives.make_loss_fn(cfg, prepared.mask_id)
  rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 1), 0)
  _, grads = jax.value_and_grad(loss_fn, has_aux=True)(out["params0"], apply_fn,
                                                         {"tokens": out["tokens"]}, rng)
  np.testing.assert_allclose(m["grad_norm"], optim.global_norm(grads), rtol=1e-4)
  if objective == "ar":  # at init the model is near uniform over the V-1 predictable tokens
    assert abs(float(m["loss"]) - np.log(prepared.vocab_size - 1)) < 0.5
  _check_golden(objective, m, prepared.tokenizer_sha256)


def _check_golden(objective: str, m: dict, tokenizer_sha256: str) -> None:
  """Compares with tests/golden/one_step.json; DLMSCALE_REGOLD=1 records new values instead."""
  golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
  if os.environ.get("DLMSCALE_REGOLD"):
    golden[objective] = {"loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                         "tokenizer_sha256": tokenizer_sha256, "jax": jax.__version__}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
  g = golden[objective]
  regold = ("if the change is intended (the independent numpy check above passed), record new "
            "values with: DLMSCALE_REGOLD=1 python -m pytest -q tests/test_train.py -k golden, and "
            "commit tests/golden/one_step.json saying why")
  if (g["tokenizer_sha256"], g["jax"]) != (tokenizer_sha256, jax.__version__):
    pytest.fail(f"golden values were recorded with tokenizer {g['tokenizer_sha256'][:12]}... and "
                f"JAX {g['jax']}, this environment has {tokenizer_sha256[:12]}... and JAX "
                f"{jax.__version__} (requirements.txt pins JAX; the tokenizer text is the Python "
                f"standard library's); {regold}", pytrace=False)
  for key, rtol in (("loss", 1e-5), ("grad_norm", 1e-4)):
    if not np.isclose(float(m[key]), g[key], rtol=rtol, atol=0):
      pytest.fail(f"{objective} step-1 {key} {float(m[key])!r} differs from the golden {g[key]!r}; "
                  f"{regold}", pytrace=False)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_loss_falls_and_run_dir_contract(objective, tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, objective, epochs=6.0)
  summary = train.train_and_evaluate(cfg, tmp_path)
  rows = rundir.read_metrics(tmp_path)
  tr = [r for r in rows if r["split"] == "train"]
  ev = [r for r in rows if r["split"] == "eval"]
  assert np.mean([r["loss"] for r in tr[-3:]]) < np.mean([r["loss"] for r in tr[:3]]) - 0.5
  assert ev[-1]["loss"] < ev[0]["loss"]
  for r in rows:
    assert {"step", "split", "loss", "tokens_seen", "epoch", "flops", "wall_s"} <= set(r)
  assert all("loss_se" in r and r["loss_se"] > 0 for r in ev)
  assert summary["steps"] == tr[-1]["step"] == pipeline.steps_for_budget(
      cfg.unique_tokens, cfg.epochs, cfg.batch_size, cfg.data.seq_len)
  assert summary["epochs"] == 6.0 and abs(tr[-1]["epoch"] - 6.0) < 0.5
  assert json.loads((tmp_path / "summary.json").read_text())["final_eval_loss"] == ev[-1]["loss"]
  assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
  assert json.loads((tmp_path / "config.json").read_text())["objective"] == objective


def test_kill_and_resume_is_bitwise_exact(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  assert _main(cfg, straight).returncode == 0
  killed = _main(cfg, broken, DLMSCALE_FAULT="kill:8")
  assert killed.returncode == -9 and not (broken / "summary.json").exists()
  resumed = _main(cfg, broken)
  assert resumed.returncode == 0, resumed.stderr
  # Checkpoints every 3 steps (saved asynchronously); killed before step 8, so 3 or 6 survives.
  assert int(re.search(r"resuming at step (\d+)", resumed.stdout).group(1)) in (3, 6)
  assert _losses(broken) == _losses(straight)
  a, b = _final_params(straight), _final_params(broken)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigterm_checkpoints_current_step_and_exits_cleanly(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  out = _main(cfg, tmp_path, DLMSCALE_FAULT="term:5")
  assert out.returncode == 0, out.stderr
  assert "stopped by signal" in out.stdout
  assert 5 in [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert not (tmp_path / "summary.json").exists()
  again = _main(cfg, tmp_path)
  assert again.returncode == 0 and "resuming at step 5" in again.stdout
  assert (tmp_path / "summary.json").exists()


def test_four_cpu_devices_data_x_fsdp_matches_single_device(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  one = _main(cfg, tmp_path / "one")
  assert one.returncode == 0, one.stderr
  cfg4 = tiny_config(tiny_corpus, data_cache, "ar", **{"mesh.data": 2, "mesh.fsdp": 2})
  four = _main(cfg4, tmp_path / "four", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  assert four.returncode == 0, four.stderr
  s4 = json.loads((tmp_path / "four" / "summary.json").read_text())
  assert s4["device_count"] == 4
  la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "four")
  assert [r[:2] for r in la] == [r[:2] for r in lb]
  np.testing.assert_allclose([r[2] for r in la], [r[2] for r in lb], rtol=2e-4)
  for x, y in zip(jax.tree.leaves(_final_params(tmp_path / "one")),
                  jax.tree.leaves(_final_params(tmp_path / "four"))):
    np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-5)


def test_two_processes_match_single_process(tiny_corpus, data_cache, tmp_path):
  import portpicker
  cfg = tiny_config(tiny_corpus, data_cache, "mdm")
  single = _main(cfg, tmp_path / "single")
  assert single.returncode == 0, single.stderr
  port = portpicker.pick_unused_port()
  root = pathlib.Path(__file__).resolve().parents[1]
  cmd = [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py",
         f"--workdir={tmp_path / 'multi'}", *config_flags_for(cfg)]
  procs = [subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  s = json.loads((tmp_path / "multi" / "summary.json").read_text())
  assert s["process_count"] == 2 and s["device_count"] == 2
  la, lb = _losses(tmp_path / "single"), _losses(tmp_path / "multi")
  assert [r[:2] for r in la] == [r[:2] for r in lb]
  np.testing.assert_allclose([r[2] for r in la], [r[2] for r in lb], rtol=2e-4)
