"""Token-order augmentation (dlmscale/objectives/orders.py): N = 1 is bitwise plain AR, N > 1 permutes only
training, evaluation stays the left-to-right NLL, and the trainer runs it from the command line."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import config_flags_for, subprocess_env, tiny_config
from dlmscale import objectives
from dlmscale.objectives import orders
from dlmscale.train import steps as program
from dlmscale import run_dir as rundir
from dlmscale.runtime import sharding
from dlmscale.data import pipeline
from dlmscale.model import transformer as model_lib
from dlmscale.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _setup(cfg):
  prepared = pipeline.prepare(cfg.data)
  mesh = sharding.make_mesh(cfg.mesh)
  setup = program.build(cfg, prepared.vocab_size, prepared.mask_id, total_steps=10, mesh=mesh)
  with jax.set_mesh(mesh):
    params = jax.tree.map(np.asarray, setup.init().params)
  return prepared, setup, params


def _apply(cfg, vocab_size):
  model = model_lib.Transformer(program.model_config_from(cfg, vocab_size))
  return lambda p, t, **kw: model.apply({"params": p}, t, **kw)


def test_order_set_keeps_the_first_token_and_left_to_right_first():
  o = orders.order_set(seed=3, n=16, length=32)
  assert o.shape == (16, 32) and o.dtype == np.int32
  np.testing.assert_array_equal(o[0], np.arange(32))
  assert (o[:, 0] == 0).all() and all(sorted(row) == list(range(32)) for row in o)
  assert len({tuple(r) for r in o}) == 16  # distinct orders
  np.testing.assert_array_equal(o, orders.order_set(3, 16, 32))  # from the seed alone
  assert not np.array_equal(o[1:], orders.order_set(4, 16, 32)[1:])


def test_permute_reads_the_sequence_in_order_and_targets_the_next_position():
  tokens_BxL = jnp.array([[10, 11, 12, 13]])
  order_BxL = jnp.array([[0, 2, 3, 1]])
  perm, target = orders.permute(tokens_BxL, order_BxL)
  np.testing.assert_array_equal(perm, [[10, 12, 13, 11]])
  np.testing.assert_array_equal(target, [[2, 3, 1, 0]])  # slot i predicts the token at order[i+1]
  np.testing.assert_array_equal(model_lib.left_to_right_targets(4), [1, 2, 3, 0])


def test_one_order_is_bitwise_the_plain_ar_step(tiny_corpus, data_cache):
  """The permuting path with the single left-to-right order gives the plain AR loss and gradients
  bit for bit, and N = 1 keeps both the plain loss function and the plain parameter tree."""
  cfg = tiny_config(tiny_corpus, data_cache, "ar")
  prepared, _, params = _setup(cfg)
  assert "target_embedding" not in params
  apply_fn = _apply(cfg, prepared.vocab_size)
  tokens = np.asarray(prepared.train_chunks[:cfg.batch_size], np.int32)
  rng = jax.random.key(0)
  plain = jax.jit(jax.value_and_grad(lambda p: objectives.ar_loss(
      p, apply_fn, {"tokens": tokens}, rng, mask_id=prepared.mask_id)[0]))
  one = jnp.asarray(orders.order_set(cfg.seed, 1, cfg.data.seq_len))
  permuted = jax.jit(jax.value_and_grad(lambda p: orders.ar_orders_loss(
      p, apply_fn, {"tokens": tokens}, rng, orders_NxL=one, mask_id=prepared.mask_id,
      tell_target=False)[0]))
  (loss_a, grads_a), (loss_b, grads_b) = plain(params), permuted(params)
  np.testing.assert_array_equal(loss_a, loss_b)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_array_equal(a, b)
  assert objectives.make_loss_fn(cfg, prepared.mask_id).func is objectives.ar_loss


def test_many_orders_add_only_the_target_embedding_and_train_on_permuted_sequences(
    tiny_corpus, data_cache):
  cfg1 = tiny_config(tiny_corpus, data_cache, "ar")
  cfg4 = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 4})
  prepared, setup1, p1 = _setup(cfg1)
  _, setup4, p4 = _setup(cfg4)
  extra = {k: v.shape for k, v in p4.items() if k not in p1}
  assert extra == {"target_embedding": (cfg4.data.seq_len, 32)}
  assert jax.tree.structure({k: v for k, v in p4.items() if k in p1}) == jax.tree.structure(p1)
  from dlmscale.model import flops
  assert flops.param_counts(setup4.model_cfg)["total"] == sum(x.size for x in jax.tree.leaves(p4))
  tokens = np.asarray(prepared.train_chunks[:cfg4.batch_size], np.int32)
  loss_fn = objectives.make_loss_fn(cfg4, prepared.mask_id)
  apply_fn = _apply(cfg4, prepared.vocab_size)
  value = lambda step: float(loss_fn(p4, apply_fn, {"tokens": tokens},
                                     jax.random.fold_in(jax.random.key(0), step))[0])
  assert value(5) == value(5)  # the orders a step draws come from its key: resume draws them again
  assert len({value(s) for s in range(4)}) > 1  # different steps draw different orders
  grads = jax.grad(lambda p: loss_fn(p, apply_fn, {"tokens": tokens}, jax.random.key(1))[0])(p4)
  assert float(jnp.abs(grads["target_embedding"]).sum()) > 0  # the model uses the target position
  # The authors' definition: the same orders, no target position, the plain parameter tree.
  theirs = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 4, "ar.target_position": False})
  _, _, p_theirs = _setup(theirs)
  assert jax.tree.structure(p_theirs) == jax.tree.structure(p1)
  loss_theirs = objectives.make_loss_fn(theirs, prepared.mask_id)
  assert loss_theirs.keywords["tell_target"] is False
  assert np.isfinite(float(loss_theirs(p_theirs, _apply(theirs, prepared.vocab_size), {"tokens": tokens},
                                       jax.random.key(1))[0]))


def test_many_orders_evaluate_the_left_to_right_nll(tiny_corpus, data_cache):
  """With N > 1 the eval is the same quantity as for plain AR: mean over the L - 1 next-token
  predictions of the sequence in its own order, written out here independently."""
  cfg = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 4})
  prepared, setup, params = _setup(cfg)
  model = model_lib.Transformer(setup.model_cfg)
  val = pipeline.eval_set(prepared, 8).tokens_NxL
  L = val.shape[1]
  with jax.set_mesh(setup.mesh):
    got = np.asarray(setup.eval_step(params, program.put_batch(val, setup),
                                     program.put_batch(np.arange(8), setup)))
  logits = model.apply({"params": params}, jnp.asarray(val), positions_BxL=jnp.arange(L)[None],
                       target_positions_BxL=jnp.concatenate([jnp.arange(1, L), jnp.zeros(1, int)])[None])
  logits = logits.at[..., prepared.mask_id].set(-jnp.inf)
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  want = -np.take_along_axis(np.asarray(logp), val[:, 1:, None], axis=-1)[..., 0].mean(axis=1)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  other_seed = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 16, "seed": 9})
  eval_fn = objectives.make_eval_fn(other_seed, prepared.mask_id)  # no order set enters the eval
  np.testing.assert_allclose(eval_fn(params, _apply(cfg, prepared.vocab_size), val, np.arange(8)),
                             want, rtol=2e-5)


@pytest.mark.parametrize("objective,n,message", [
    ("ar", 0, "integer >= 1"), ("ar", -3, "integer >= 1"), ("mdm", 4, "objective=ar only")])
def test_bad_num_orders_name_the_fix(tiny_corpus, data_cache, objective, n, message):
  cfg = tiny_config(tiny_corpus, data_cache, objective)
  cfg.ar.num_orders = n
  with pytest.raises(UserError, match=message):
    orders.num_orders(cfg)


def _main(cfg, workdir: pathlib.Path, **env) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py", f"--workdir={workdir}",
         *config_flags_for(cfg)]
  return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(**env), cwd=REPO,
                        timeout=300)


def test_main_trains_with_four_orders(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 4, "epochs": 6.0})
  out = _main(cfg, tmp_path)
  assert out.returncode == 0, out.stderr
  rows = rundir.read_metrics(tmp_path)
  tr = [r["loss"] for r in rows if r["split"] == "train"]
  assert np.mean(tr[-3:]) < np.mean(tr[:3]) - 0.3
  assert json.loads((tmp_path / "config.json").read_text())["ar"]["num_orders"] == 4
  assert "target_embedding" in (tmp_path / "params.txt").read_text()


def test_main_refuses_orders_for_diffusion(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "mdm", **{"ar.num_orders": 2})
  out = _main(cfg, tmp_path / "run")
  assert out.returncode == 2 and "objective=ar only" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_and_resume_with_orders_is_bitwise_exact(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar", **{"ar.num_orders": 4})
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  assert _main(cfg, straight).returncode == 0
  assert _main(cfg, broken, DLMSCALE_FAULT="kill:8").returncode == -9
  resumed = _main(cfg, broken)
  assert resumed.returncode == 0 and re.search(r"resuming at step \d+", resumed.stdout)
  rows = lambda d: [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(d)]
  assert rows(broken) == rows(straight)
