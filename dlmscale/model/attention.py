"""Which attention kernel a run uses, and the Pallas splash-attention path for TPUs.

`model.attention` names the implementation: `xla` and `cudnn` are jax.nn.dot_product_attention's;
`splash` is the Pallas TPU kernel shipped with jax (jax.experimental.pallas.ops.tpu.splash_attention),
which never materialises the [L, L] score matrix and skips the fully masked blocks of a causal mask;
`auto` is splash on TPU where the shape allows it, xla everywhere else. `choose` resolves it for the
platform the run compiles for (a CPU host compiling for a TPU topology chooses for the TPU), before
the model is built, so the run directory records what ran.

Splash takes [heads, L, head_dim] per sequence and does not scale the scores, so `splash` scales q by
1/sqrt(head_dim), maps the kernel over the batch, and, when a mesh is set, runs it inside shard_map
over the axes that the logical-axis rules give the batch and heads (a Pallas kernel is opaque to
XLA's partitioner, which would otherwise gather its inputs onto every chip). The mask is causal for
AR and full (bidirectional) for masked diffusion.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from dlmscale.errors import UserError

IMPLEMENTATIONS = ("xla", "cudnn", "splash")  # what a built model runs
CHOICES = ("auto",) + IMPLEMENTATIONS  # what config.model.attention may say
BLOCKS = (512, 256, 128)  # the kernel's q / kv tile: the largest that divides L
LANES = 128  # a TPU vector register's lanes: the kernel's tiles are multiples of it
HEAD_DIM_STEP = 64  # head dims compiled for v5e with libtpu: 64 (the ladder's) and 128


def splash_unfit(seq_len: int, head_dim: int) -> str | None:
  """Why splash cannot run this shape, or None when it can."""
  if seq_len % LANES:
    return f"seq_len={seq_len} is not a multiple of {LANES} (the kernel's smallest tile)"
  if head_dim % HEAD_DIM_STEP:
    return f"head_dim={head_dim} is not a multiple of {HEAD_DIM_STEP}"
  return None


def choose(requested: str, platform: str, seq_len: int, head_dim: int) -> tuple[str, str]:
  """(the implementation to build, why): `auto` resolved for `platform`; an explicit `splash`
  that cannot run here is a one-line UserError rather than a fallback the user did not ask for."""
  if requested not in CHOICES:
    raise UserError(f"unknown model attention {requested!r}; choose one of {', '.join(CHOICES)}")
  unfit = splash_unfit(seq_len, head_dim)
  if requested == "auto":
    if platform != "tpu":
      return "xla", f"splash runs on TPU only, this run's devices are {platform}"
    return ("xla", f"splash cannot: {unfit}") if unfit else ("splash", "TPU")
  if requested == "splash" and platform != "tpu":
    raise UserError(f"model.attention=splash is a TPU kernel and this run's devices are {platform}; "
                    "use model.attention=auto (splash on TPU, xla elsewhere) or xla")
  if requested == "splash" and unfit:
    raise UserError(f"model.attention=splash cannot run this shape: {unfit}; use model.attention=auto "
                    "(falls back to xla) or xla")
  return requested, "asked for"


def dot_product(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array, causal: bool,
                implementation: str, interpret: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(K)) v, causal or not, by `implementation` (one of IMPLEMENTATIONS).

  interpret=True runs splash in Pallas interpret mode (any backend, slowly): for tests on CPU."""
  if implementation == "splash":
    return splash(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, causal, interpret=interpret)
  return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=causal,
                                      implementation=implementation)


def splash(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array, causal: bool,
           interpret: bool = False, block: int | None = None) -> jax.Array:
  """Splash attention on [B, L, H, K] inputs; `block` overrides the tile (tests)."""
  L, K = q_BxLxHxK.shape[1], q_BxLxHxK.shape[3]
  block = block or next((b for b in BLOCKS if L % b == 0), 0)
  if not block or L % block:
    raise UserError(f"splash attention: seq_len={L} is not a multiple of {block or LANES}")
  q_BxLxHxK = q_BxLxHxK * jnp.asarray(K**-0.5, q_BxLxHxK.dtype)
  local = functools.partial(_splash_local, causal=causal, block=block, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "head_dim"))
  if mesh.empty or all(axes is None for axes in spec):
    return local(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK)
  if spec[1] is not None or spec[3] is not None:
    raise UserError(f"splash attention needs whole sequences and heads on each device; the "
                    f"logical-axis rules shard them as {spec}")
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                       check_vma=False)(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK)


def _splash_local(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array, *, causal: bool,
                  block: int, interpret: bool) -> jax.Array:
  """The kernel on one device's sequences and heads: a [H, L, K] kernel mapped over the batch."""
  _, L, H, _ = q_BxLxHxK.shape
  head_mask = sa.CausalMask((L, L)) if causal else sa.FullMask((L, L))
  sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  kernel = sa.make_splash_mha(sa.MultiHeadMask([head_mask] * H), block_sizes=sizes, head_shards=1,
                              q_seq_shards=1, interpret=interpret)
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731 - [B, L, H, K] <-> [B, H, L, K]
  o_BxHxLxK = jax.vmap(kernel)(heads_first(q_BxLxHxK), heads_first(k_BxLxHxK), heads_first(v_BxLxHxK))
  return heads_first(o_BxHxLxK)
