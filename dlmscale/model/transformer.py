"""The one transformer both families share; `causal` is the only switch between them.

A pre-norm decoder-style stack (RMSNorm, RoPE, SwiGLU, no biases, tied embeddings by default).
`causal=True` is the AR model; `causal=False` is the masked-diffusion denoiser: bidirectional, and
with no time input since the mask pattern already tells it how noisy the input is. It returns logits
only: losses live in objectives.py so the two families cannot drift apart inside the network.

Parameters and activations carry logical axis names (`vocab`, `embed`, `heads`, `head_dim`, `mlp`;
`batch`, `length`) so sharding.py places them on a mesh without the model knowing the mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlmscale.errors import UserError
from dlmscale.model import attention as attention_lib

REMAT = ("none", "full", "dots")
ATTENTION = attention_lib.IMPLEMENTATIONS  # config's "auto" is resolved before (attention.choose)
DTYPES = ("float32", "bfloat16", "float16")
OBJECTIVES = ("ar", "mdm")
ROPE_BASE = 10_000.0
INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int  # includes the reserved <mask> id (the last one)
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  max_len: int
  causal: bool = True
  dtype: str = "float32"  # activations / compute
  param_dtype: str = "float32"  # stored weights
  remat: str = "none"  # none | full | dots
  tie_embeddings: bool = True
  attention: str = "xla"  # xla | cudnn (jax.nn.dot_product_attention) | splash (TPU Pallas kernel)
  splash_interpret: bool = False  # splash in Pallas interpret mode: CPU tests only, slow
  # AR token-order augmentation (orders.py): a learned [max_len, D] embedding of the position each
  # slot predicts. Off by default, so plain models keep their parameter tree and numbers.
  target_position_embedding: bool = False

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads


def validate(cfg: ModelConfig) -> ModelConfig:
  """Checks a config up front so a bad shape fails with a fix, not deep inside a trace."""
  for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
    if getattr(cfg, name) <= 0:
      raise UserError(f"model {name} must be positive, got {getattr(cfg, name)}")
  if cfg.d_model % cfg.n_heads:
    raise UserError(
        f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}; choose n_heads that "
        f"divides d_model (e.g. {cfg.d_model // 32 or 1} heads of 32)")
  if cfg.head_dim % 2:
    raise UserError(f"head_dim = d_model / n_heads = {cfg.head_dim} must be even for RoPE")
  for name, allowed in (("remat", REMAT), ("attention", ATTENTION), ("dtype", DTYPES),
                        ("param_dtype", DTYPES)):
    if getattr(cfg, name) not in allowed:
      raise UserError(f"unknown model {name} {getattr(cfg, name)!r}; choose one of "
                      f"{', '.join(allowed)}")
  unfit = attention_lib.splash_unfit(cfg.max_len, cfg.head_dim) if cfg.attention == "splash" else None
  if unfit:
    raise UserError(f"attention='splash' cannot run this shape: {unfit}; use attention='xla'")
  if cfg.attention == "cudnn" and cfg.dtype == "float32":
    raise UserError("attention='cudnn' needs dtype bfloat16 or float16 (and a GPU); "
                    "use attention='xla' for float32")
  return cfg


def left_to_right_targets(length: int) -> jax.Array:
  """Slot i predicts position i + 1; the last slot predicts nothing (0: never a target, never scored)."""
  return jnp.concatenate([jnp.arange(1, length), jnp.zeros((1,), jnp.int32)]).astype(jnp.int32)


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
           std: float | None) -> jax.Array:
  init = nn.initializers.ones if std is None else nn.initializers.normal(std)
  dtype = jnp.dtype(module.cfg.param_dtype)
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    scale_D = _param(self, "scale", (self.cfg.d_model,), ("embed",), None)
    x = x_BxLxD.astype(jnp.float32)  # the mean square overflows/underflows in half precision
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)
    return (x * scale_D.astype(jnp.float32)).astype(self.cfg.dtype)


def rope(x_BxLxHxK: jax.Array, positions_BxL: jax.Array | None = None) -> jax.Array:
  """Rotary position embedding (rotate-half form), computed in float32.

  positions_BxL: each slot's position in the original sequence (token-order augmentation feeds a
  permuted sequence); None = 0..L-1, the plain path, computed exactly as before the option existed.
  """
  L, K = x_BxLxHxK.shape[1], x_BxLxHxK.shape[3]
  inv_freq_K2 = ROPE_BASE**(-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
  if positions_BxL is None:
    angle_LxK2 = jnp.arange(L, dtype=jnp.float32)[:, None] * inv_freq_K2[None, :]
    sin, cos = jnp.sin(angle_LxK2)[None, :, None, :], jnp.cos(angle_LxK2)[None, :, None, :]
  else:
    angle_BxLxK2 = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_K2
    sin, cos = jnp.sin(angle_BxLxK2)[:, :, None, :], jnp.cos(angle_BxLxK2)[:, :, None, :]
  x = x_BxLxHxK.astype(jnp.float32)
  x1, x2 = x[..., :K // 2], x[..., K // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.cfg
    D, H, K = cfg.d_model, cfg.n_heads, cfg.head_dim
    out_std = INIT_STD / (2 * cfg.n_layers)**0.5
    in_axes, act_axes = ("embed", "heads", "head_dim"), ("batch", "length", "heads", "head_dim")

    def proj(name: str) -> jax.Array:
      w_DxHxK = _param(self, name, (D, H, K), in_axes, INIT_STD).astype(cfg.dtype)
      return jnp.einsum("BLD,DHK->BLHK", x_BxLxD, w_DxHxK)

    q_BxLxHxK = nn.with_logical_constraint(rope(proj("query"), positions_BxL), act_axes)
    k_BxLxHxK = nn.with_logical_constraint(rope(proj("key"), positions_BxL), act_axes)
    v_BxLxHxK = nn.with_logical_constraint(proj("value"), act_axes)
    o_BxLxHxK = attention_lib.dot_product(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, cfg.causal, cfg.attention,
                                          interpret=cfg.splash_interpret)
    o_BxLxHxK = nn.with_logical_constraint(o_BxLxHxK, act_axes)
    w_HxKxD = _param(self, "out", (H, K, D), ("heads", "head_dim", "embed"), out_std)
    return jnp.einsum("BLHK,HKD->BLD", o_BxLxHxK, w_HxKxD.astype(cfg.dtype))


class Mlp(nn.Module):
  """SwiGLU: silu(x W_gate) * (x W_up), then W_out."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    D, F = cfg.d_model, cfg.d_ff
    out_std = INIT_STD / (2 * cfg.n_layers)**0.5
    gate_DxF = _param(self, "wi_gate", (D, F), ("embed", "mlp"), INIT_STD).astype(cfg.dtype)
    up_DxF = _param(self, "wi_up", (D, F), ("embed", "mlp"), INIT_STD).astype(cfg.dtype)
    h_BxLxF = jax.nn.silu(x_BxLxD @ gate_DxF) * (x_BxLxD @ up_DxF)
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "mlp"))
    wo_FxD = _param(self, "wo", (F, D), ("mlp", "embed"), out_std).astype(cfg.dtype)
    return h_BxLxF @ wo_FxD


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array | None = None) -> jax.Array:
    axes = ("batch", "length", "embed")
    attn = Attention(self.cfg, name="attn")
    x_BxLxD = x_BxLxD + attn(RMSNorm(self.cfg, name="attn_norm")(x_BxLxD), positions_BxL)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, axes)
    x_BxLxD = x_BxLxD + Mlp(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x_BxLxD))
    return nn.with_logical_constraint(x_BxLxD, axes)


def _block_class(remat: str) -> Any:
  if remat == "none":
    return Block
  if remat == "full":
    return nn.remat(Block)
  # "dots": keep the weight matmul outputs, recompute attention scores and elementwise ops.
  return nn.remat(Block, policy=jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)


class Transformer(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, positions_BxL: jax.Array | None = None,
               target_positions_BxL: jax.Array | None = None, hidden: bool = False) -> Any:
    """Token ids [B, L] -> float32 logits [B, L, V].

    hidden=True returns (final hidden states [B, L, D], output projection [V, D]), both in the
    compute dtype, instead of the logits: a chunked loss (objectives/nll.py) projects a slice at a time.

    positions_BxL / target_positions_BxL (token-order augmentation only, see orders.py): where each
    slot's token sits in the original sequence, and which position its logits predict. None = left
    to right (slot i holds position i and predicts i + 1), which is how every evaluation runs.
    """
    cfg = self.cfg
    if tokens_BxL.shape[-1] > cfg.max_len:
      raise ValueError(f"sequence length {tokens_BxL.shape[-1]} exceeds max_len={cfg.max_len}")
    V, D = cfg.vocab_size, cfg.d_model
    embed_VxD = _param(self, "embedding", (V, D), ("vocab", "embed"), INIT_STD)
    x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0).astype(cfg.dtype)
    if cfg.target_position_embedding:
      if target_positions_BxL is None:
        target_positions_BxL = left_to_right_targets(tokens_BxL.shape[-1])[None]
      target_LxD = _param(self, "target_embedding", (cfg.max_len, D), ("length", "embed"), INIT_STD)
      x_BxLxD = x_BxLxD + jnp.take(target_LxD, target_positions_BxL, axis=0).astype(cfg.dtype)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))
    block = _block_class(cfg.remat)
    for i in range(cfg.n_layers):
      x_BxLxD = block(cfg, name=f"block_{i}")(x_BxLxD, positions_BxL)
    x_BxLxD = RMSNorm(cfg, name="final_norm")(x_BxLxD)
    if hidden:
      head_VxD = embed_VxD if cfg.tie_embeddings else _param(
          self, "unembed", (D, V), ("embed", "vocab"), INIT_STD).T
      return x_BxLxD, head_VxD.astype(cfg.dtype)
    x_BxLxD = x_BxLxD.astype(jnp.float32)
    if cfg.tie_embeddings:
      logits_BxLxV = jnp.einsum("BLD,VD->BLV", x_BxLxD, embed_VxD.astype(jnp.float32))
    else:
      unembed_DxV = _param(self, "unembed", (D, V), ("embed", "vocab"), INIT_STD)
      logits_BxLxV = x_BxLxD @ unembed_DxV.astype(jnp.float32)
    return nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab"))
