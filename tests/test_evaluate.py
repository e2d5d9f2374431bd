"""The validation number and `python -m dlmscale.evaluate`: invariant to batching and devices, bad input.

The CLI tests use tiny trained runs (4 steps, one checkpoint), shared with test_sample.py.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import subprocess_env, tiny_config
from dlmscale import objectives
from dlmscale.commands import evaluate
from dlmscale.eval import val_loss as validation
from dlmscale.model import transformer as model_lib
from helpers.runs import trained_run

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mdm_run(tmp_path_factory, tiny_corpus, data_cache):
  return trained_run(tmp_path_factory, tiny_corpus, data_cache, "mdm")


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory, tiny_corpus, data_cache):
  return trained_run(tmp_path_factory, tiny_corpus, data_cache, "ar")


def _final_training_eval(workdir: pathlib.Path) -> dict:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r["split"] == "eval"][-1]


def _task_file(tmp_path: pathlib.Path, lines: list[str] | None = None) -> pathlib.Path:
  p = tmp_path / "task.jsonl"
  p.write_text("\n".join(lines or [
      json.dumps({"context": "def f(x):\n    return", "choices": [" x", " import", " )"], "label": 0}),
      json.dumps({"context": "import", "choices": [" os", " ==", " 7("], "label": 0}),
      json.dumps({"context": "for i in", "choices": [" range(", "))"], "label": 0}),
  ]) + "\n")
  return p


def _main_in_process(monkeypatch, capsys, module, *args: str) -> tuple[int, str, str]:
  monkeypatch.setattr(sys, "argv", [module.__name__, *args])
  rc = module.main()
  out = capsys.readouterr()
  return rc, out.out, out.err


# --- the validation number -----------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_validation_is_the_same_for_any_batch_size(objective):
  from configs import base
  c = base.get_config()
  c.objective, c.eval.mc_samples, c.eval.seed = objective, 4, 7
  V, L, N = 32, 16, 11
  cfg = model_lib.ModelConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=L,
                              causal=objective == "ar")
  model = model_lib.Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, L), jnp.int32))["params"]
  apply_fn = lambda p, t: model.apply({"params": p}, t)  # noqa: E731
  eval_fn = objectives.make_eval_fn(c, mask_id=V - 1)
  val_NxL = np.random.default_rng(0).integers(0, V - 1, (N, L)).astype(np.int32)
  losses = lambda fn, b: validation.per_sequence_losses(  # noqa: E731
      jax.jit(validation.eval_all_fn(fn, apply_fn)), params, validation.place(val_NxL, b, jnp.asarray))
  per_seq = {b: losses(eval_fn, b) for b in (3, 16)}
  np.testing.assert_allclose(per_seq[3], per_seq[16], rtol=2e-6)  # both pad a last, partial batch
  v = validation.summarise(per_seq[3], L)
  assert v.n_tokens == N * L and v.loss_se > 0
  assert v.loss == pytest.approx(validation.summarise(per_seq[16], L).loss, rel=1e-6)
  if objective == "mdm":  # the seed decides the samples: the checks above are not vacuous
    c.eval.seed = 8
    other_fn = objectives.make_eval_fn(c, mask_id=V - 1)
    assert not np.allclose(losses(other_fn, 16), per_seq[16])


def test_cli_writes_eval_json(mdm_run, tmp_path, monkeypatch, capsys):
  rc, out, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={mdm_run}",
                                  f"--task={_task_file(tmp_path)}", "--mc_items=16", "--mc_samples=3",
                                  "--mc_estimator=count")
  assert rc == 0, err
  result = json.loads((mdm_run / "eval.json").read_text())
  trained = _final_training_eval(mdm_run)  # K = 2 (the run's config.eval.mc_samples)
  assert result["mc_samples"] == 3 and result["loss"] != trained["loss"]
  assert result["loss"] == pytest.approx(trained["loss"], rel=0.2) and result["loss_se"] > 0
  assert result["n_tokens"] == trained["n_tokens"] == 16 * 32 and result["n_sequences"] == 16
  assert result["mc_method"] == "elbo" and result["mc_estimator"] == "count" and result["step"] == 4
  assert 0.0 <= result["mc_accuracy"] <= 1.0 and result["mc_accuracy_se"] > 0
  assert result["mc_items"] == 16 and result["mc_choices"] == 4
  assert result["task_items"] == 3 and 0.0 <= result["task_accuracy"] <= 1.0
  assert "validation:" in out and "built-in task" in out


def test_cli_number_is_the_same_on_four_devices(mdm_run):
  """Training's eval (one device, batch 8) vs the CLI on four devices at batch 4."""
  out = subprocess.run(
      [sys.executable, "-m", "dlmscale.evaluate", f"--workdir={mdm_run}", "--batch_size=4",
       "--mc_items=16", "--mc_method=chain"], capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert out.returncode == 0, out.stderr
  four = json.loads((mdm_run / "eval.json").read_text())
  trained = _final_training_eval(mdm_run)
  assert four["loss"] == pytest.approx(trained["loss"], rel=1e-6)
  assert four["loss_se"] == pytest.approx(trained["loss_se"], rel=1e-5)
  assert four["mc_samples"] == 2 and four["mc_method"] == "chain" and four["mc_items"] == 16
  print("4 devices:", four["loss"], "1 device:", trained["loss"])


def test_cli_ar_run_scores_a_task_file(ar_run, tmp_path, monkeypatch, capsys):
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={ar_run}",
                                f"--task={_task_file(tmp_path)}", "--mc_items=16")
  assert rc == 0, err
  result = json.loads((ar_run / "eval.json").read_text())
  assert result["loss"] == _final_training_eval(ar_run)["loss"] and result["mc_method"] == "ar"
  assert result["mc_samples"] is None and result["task_items"] == 3
  assert {"mc_accuracy", "mc_accuracy_se", "task_accuracy", "task_accuracy_se"} <= set(result)


# --- bad input -----------------------------------------------------------------------------------


def test_malformed_task_line_is_one_clear_error_without_traceback(ar_run, tmp_path):
  task = _task_file(tmp_path, [json.dumps({"context": "a", "choices": ["b", "c"], "label": 0}),
                               '{"context": "a", "choices": ["b", "c"], "label": 0'])
  out = subprocess.run([sys.executable, "-m", "dlmscale.evaluate", f"--workdir={ar_run}",
                        f"--task={task}"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=subprocess_env())
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  assert out.stderr.startswith("error: ") and "line 2" in out.stderr and "not valid JSON" in out.stderr


@pytest.mark.parametrize("lines,needle", [
    ([json.dumps({"context": "a", "choices": ["b", "c"], "label": 2})], "line 1: label 2 is out of range"),
    (['{"context": "a"}'], "line 1: missing key(s) choices, label"),
])
def test_bad_task_files(ar_run, tmp_path, monkeypatch, capsys, lines, needle):
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={ar_run}",
                                f"--task={_task_file(tmp_path, lines)}")
  assert rc == 2 and err.startswith("error: ") and needle in err, err


def test_run_without_a_checkpoint(tmp_path, monkeypatch, capsys, tiny_corpus, data_cache):
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={tmp_path}")
  assert rc == 2 and "no config.json" in err, err
  (tmp_path / "config.json").write_text(tiny_config(tiny_corpus, data_cache).to_json())
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={tmp_path}")
  assert rc == 2 and "has no checkpoint" in err and "python -m dlmscale.main" in err, err
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={tmp_path / 'nope'}")
  assert rc == 2 and "does not exist" in err, err
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, "--mc_samples=4")
  assert rc == 2 and "--workdir" in err, err


def test_bad_flags(ar_run, mdm_run, monkeypatch, capsys):
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={ar_run}", "--mc_method=chain")
  assert rc == 2 and "diffusion runs" in err, err
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={mdm_run}", "--mc_samples=0")
  assert rc == 2 and "--mc_samples=0" in err, err
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={mdm_run}", "--mc_estimator=x")
  assert rc == 2 and "--mc_estimator='x'" in err, err
  rc, _, err = _main_in_process(monkeypatch, capsys, evaluate, f"--workdir={mdm_run}", "--mc_sample=4")
  assert rc == 2 and "mc_sample" in err, err


def test_open_run_at_a_requested_step(ar_run):
  """The one restore path reads a requested checkpoint exactly, and says which steps exist."""
  from dlmscale.train import open_run as restore
  from dlmscale.errors import UserError
  newest, at = restore.load(ar_run), restore.load(ar_run, step=4)
  assert newest.step == at.step == 4 and not hasattr(at, "opt_state")  # inference holds params only
  for a, b in zip(jax.tree.leaves(newest.params), jax.tree.leaves(at.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(UserError, match=r"no checkpoint at step 3 \(it has steps \[4\]\)"):
    restore.load(ar_run, step=3)
