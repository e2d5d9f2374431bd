"""The shared transformer: causal vs bidirectional, one parameter tree for both families, config checks."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from dlmscale.model import flops
from dlmscale.runtime import sharding
from dlmscale.errors import UserError
from dlmscale.model.transformer import ModelConfig, Transformer
from dlmscale.train.steps import model_config_from

TINY = ModelConfig(vocab_size=11, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_len=12)


def _init(cfg: ModelConfig, seed: int = 0):
  """Random weights filled in by numpy: skips compiling a PRNG kernel per parameter shape."""
  shapes = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, cfg.max_len), jnp.int32))
  rng = np.random.default_rng(seed)
  fill = lambda s: jnp.asarray(  # noqa: E731
      rng.normal(1.0 if len(s.shape) == 1 else 0.0, 0.2, s.shape), s.dtype)
  return Transformer(cfg), jax.tree.map(fill, shapes)


def _tokens(B: int, L: int, V: int, seed: int) -> jax.Array:
  return jax.random.randint(jax.random.PRNGKey(seed), (B, L), 0, V - 1)


@pytest.mark.parametrize("causal", [True, False])
def test_causality(causal):
  cfg = dataclasses.replace(TINY, causal=causal)
  model, params = _init(cfg)
  L, i = 8, 3
  x = _tokens(2, L, cfg.vocab_size, 1)
  x_changed = x.at[:, i + 1:].set((x[:, i + 1:] + 1) % (cfg.vocab_size - 1))
  apply = jax.jit(model.apply)
  logits, logits_changed = apply(params, x), apply(params, x_changed)
  assert logits.shape == (2, L, cfg.vocab_size) and logits.dtype == jnp.float32
  prefix_delta = float(jnp.max(jnp.abs(logits[:, :i + 1] - logits_changed[:, :i + 1])))
  if causal:
    assert prefix_delta == 0.0  # positions <= i never see the changed suffix
  else:
    assert prefix_delta > 1e-4  # the denoiser reads the whole sequence
  assert float(jnp.max(jnp.abs(logits[:, i + 1:] - logits_changed[:, i + 1:]))) > 1e-4


def _config(objective: str, **model):
  c = base.get_config()
  c.objective = objective
  c.data.seq_len = 16
  for k, v in model.items():
    c.model[k] = v
  return c


def test_families_share_everything_but_causal():
  ar = model_config_from(_config("ar"), vocab_size=64)
  mdm = model_config_from(_config("mdm"), vocab_size=64)
  assert ar.causal and not mdm.causal
  assert dataclasses.replace(ar, causal=False) == mdm
  shapes = [jax.tree.map(lambda p: (p.shape, p.dtype), jax.eval_shape(
      Transformer(c).init, jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))) for c in (ar, mdm)]
  assert shapes[0] == shapes[1]
  n_leaves = sum(np.prod(s) for s, _ in jax.tree.leaves(shapes[0], is_leaf=lambda x: isinstance(x, tuple)))
  assert n_leaves == flops.param_counts(ar)["total"] == flops.param_counts(mdm)["total"]


def test_model_config_from_ladder_overrides_and_custom():
  cfg = model_config_from(_config("ar"), vocab_size=100)  # base default size s1M
  assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff) == (128, 5, 4, 352)
  assert cfg.max_len == 16 and cfg.vocab_size == 100
  over = model_config_from(_config("mdm", n_layers=2, d_ff=100), vocab_size=100)
  assert (over.d_model, over.n_layers, over.d_ff) == (128, 2, 100)
  c = _config("ar", d_model=48, n_layers=1, n_heads=3, d_ff=64)
  c.model_size = "custom"
  assert model_config_from(c, 10).head_dim == 16


@pytest.mark.parametrize("change, needle", [
    (lambda c: setattr(c, "objective", "gpt"), "objective"),
    (lambda c: setattr(c.model, "n_heads", 3), "divisible"),
    (lambda c: setattr(c, "model_size", "custom"), "custom"),
    (lambda c: setattr(c, "model_size", "s7Q"), "unknown model size"),
    (lambda c: setattr(c.model, "remat", "some"), "remat"),
    (lambda c: setattr(c.model, "attention", "cudnn"), "cudnn"),
])
def test_model_config_from_rejects_bad_input(change, needle):
  c = _config("ar")
  change(c)
  with pytest.raises(UserError, match=needle):
    model_config_from(c, vocab_size=64)


def test_logical_axes_and_sharding_rules():
  _, params = _init(TINY)
  specs = nn.get_partition_spec(params)["params"]
  assert specs["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  attn, mlp = specs["block_0"]["attn"], specs["block_1"]["mlp"]
  assert attn["query"] == jax.sharding.PartitionSpec("embed", "heads", "head_dim")
  assert attn["out"] == jax.sharding.PartitionSpec("heads", "head_dim", "embed")
  assert mlp["wi_gate"] == jax.sharding.PartitionSpec("embed", "mlp")
  assert mlp["wo"] == jax.sharding.PartitionSpec("mlp", "embed")
  assert specs["final_norm"]["scale"] == jax.sharding.PartitionSpec("embed")
  used = {a for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
          for a in s}
  assert used <= {name for name, _ in sharding.LOGICAL_RULES}


_SHARDED_PROBE = r"""
import json
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from dlmscale.runtime import sharding
from dlmscale.model.transformer import ModelConfig, Transformer
cfg = ModelConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_len=8)
model = Transformer(cfg)
mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(2, 2), sharding.MESH_AXES)
tokens_1xL = jnp.zeros((1, 8), jnp.int32)
boxed = jax.eval_shape(model.init, jax.random.key(0), tokens_1xL)["params"]
param_sh = sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh)
with jax.set_mesh(mesh):
  params = jax.jit(lambda k: nn.meta.unbox(model.init(k, tokens_1xL)["params"]),
                   out_shardings=param_sh)(jax.random.key(0))
acts = {}
def spy(next_fun, args, kwargs, context):  # the sharding XLA gave each module's output
  out = next_fun(*args, **kwargs)
  if context.method_name == "__call__" and isinstance(out, jax.Array):
    name = "/".join(context.module.path) or "logits"
    jax.debug.inspect_array_sharding(out, callback=lambda s: acts.setdefault(name, str(s.spec)))
  return out
def apply(p, t):
  with nn.intercept_methods(spy):
    return model.apply({"params": p}, t)
x_BxL = jnp.asarray(np.random.default_rng(0).integers(0, 11, (8, 8)), jnp.int32)
with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
  logits = jax.jit(apply)(params, jax.device_put(x_BxL, sharding.batch_sharding(mesh)))
host = jax.device_get(params)
ref = jax.jit(lambda p, t: model.apply({"params": p}, t))(
    jax.tree.map(lambda a: jax.device_put(a, jax.devices()[0]), host), jax.device_put(x_BxL, jax.devices()[0]))
print(json.dumps({
    "devices": jax.device_count(),
    "params": {"/".join(k.key for k in path): [str(v.sharding.spec), list(v.addressable_shards[0].data.shape)]
               for path, v in jax.tree_util.tree_flatten_with_path(params)[0]},
    "acts": acts, "logits": [str(logits.sharding.spec), list(logits.addressable_shards[0].data.shape)],
    "max_abs_diff": float(np.max(np.abs(np.asarray(logits) - np.asarray(ref))))}))
"""


def test_parameters_and_activations_are_sharded_on_a_2x2_mesh():
  """4 forced CPU devices, mesh data=2 x fsdp=2: every parameter is split over fsdp along its embed
  (d_model) dimension, every activation along the batch over all 4 devices, and the sharded model
  computes the unsharded model's logits."""
  import json, subprocess, sys
  from conftest import REPO, subprocess_env
  proc = subprocess.run([sys.executable, "-c", _SHARDED_PROBE], cwd=REPO, capture_output=True, text=True,
                        env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got["devices"] == 4
  D, H, K, F, V = 32, 2, 16, 48, 12  # each device holds half of d_model (32 -> 16)
  want = {"embedding": ["P(None, 'fsdp')", [V, D // 2]], "final_norm/scale": ["P('fsdp',)", [D // 2]]}
  for i in range(2):
    b = f"block_{i}"
    for w in ("query", "key", "value"):
      want[f"{b}/attn/{w}"] = ["P('fsdp', None, None)", [D // 2, H, K]]
    want[f"{b}/attn/out"] = ["P(None, None, 'fsdp')", [H, K, D // 2]]
    want[f"{b}/mlp/wi_gate"] = want[f"{b}/mlp/wi_up"] = ["P('fsdp', None)", [D // 2, F]]
    want[f"{b}/mlp/wo"] = ["P(None, 'fsdp')", [F, D // 2]]
    want[f"{b}/attn_norm/scale"] = want[f"{b}/mlp_norm/scale"] = ["P('fsdp',)", [D // 2]]
  assert got["params"] == want
  batch_over_all = "P(('data', 'fsdp'),)"
  assert len(got["acts"]) == 2 * 5 + 2  # per block: 2 norms, attention, MLP, the block; final norm; logits
  assert all(spec == batch_over_all for spec in got["acts"].values()), got["acts"]
  assert got["logits"] == [batch_over_all, [8 // 4, 8, V]]
  assert got["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_memory_not_maths(remat):
  cfg = dataclasses.replace(TINY, n_layers=1)  # one block keeps the three compiles cheap
  model, params = _init(cfg)
  remat_model = Transformer(dataclasses.replace(cfg, remat=remat))
  x = _tokens(2, 8, cfg.vocab_size, 4)
  loss = lambda m: lambda p: jnp.mean(m.apply(p, x) ** 2)  # noqa: E731
  g_ref, g = jax.jit(jax.grad(loss(model)))(params), jax.jit(jax.grad(loss(remat_model)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_ref, g)


def test_untied_and_bf16():
  cfg = dataclasses.replace(TINY, tie_embeddings=False, dtype="bfloat16")
  model, params = _init(cfg)
  assert params["params"]["unembed"].value.shape == (cfg.d_model, cfg.vocab_size)
  assert sum(p.size for p in jax.tree.leaves(params)) == flops.param_counts(cfg)["total"]
  logits = jax.jit(model.apply)(params, _tokens(2, 8, cfg.vocab_size, 5))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_rejects_sequences_longer_than_max_len():
  model, params = _init(TINY)
  with pytest.raises(ValueError, match="max_len"):
    model.apply(params, jnp.zeros((1, TINY.max_len + 1), jnp.int32))
