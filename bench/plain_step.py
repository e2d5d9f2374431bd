"""A plain-JAX reference train step (no flax, no optax): the speed the real step should match.

Same architecture and FLOPs as dlmscale.model.transformer (pre-norm RMSNorm, RoPE, SwiGLU, no biases, tied
embeddings, the mask logit removed before log_softmax), the same objectives in their simplest form
(AR next-token NLL; MDM 1/t-weighted masked NLL) and AdamW with global-norm clipping. Timing it at
the same shapes as the real step isolates what flax/optax/our code add on top of the bare math.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init(key, V: int, D: int, n_layers: int, H: int, F: int) -> dict:
  """Parameters as a plain dict; layers are a Python list, unrolled like the flax model."""
  n = lambda k, s, std=0.02: std * jax.random.normal(k, s, jnp.float32)  # noqa: E731
  ks = iter(jax.random.split(key, 1 + 7 * n_layers))
  layer = lambda: {"q": n(next(ks), (D, H, D // H)), "k": n(next(ks), (D, H, D // H)),  # noqa: E731
                   "v": n(next(ks), (D, H, D // H)), "o": n(next(ks), (H, D // H, D)),
                   "g": n(next(ks), (D, F)), "u": n(next(ks), (D, F)), "w": n(next(ks), (F, D)),
                   "n1": jnp.ones(D), "n2": jnp.ones(D)}
  return {"emb": n(next(ks), (V, D)), "layers": [layer() for _ in range(n_layers)],
          "norm": jnp.ones(D)}


def _norm(x, s):
  return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * s


def _rope(x_BxLxHxK):
  L, K = x_BxLxHxK.shape[1], x_BxLxHxK.shape[3]
  ang_LxK2 = jnp.arange(L)[:, None] * 10_000.0**(-jnp.arange(0, K, 2) / K)[None]
  sin, cos = jnp.sin(ang_LxK2)[:, None], jnp.cos(ang_LxK2)[:, None]
  x1, x2 = x_BxLxHxK[..., :K // 2], x_BxLxHxK[..., K // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def forward(p: dict, tokens_BxL, causal: bool):
  """float32 logits [B, L, V] with the mask id (the last) at -inf."""
  x = p["emb"][tokens_BxL]
  L = tokens_BxL.shape[1]
  for w in p["layers"]:
    h = _norm(x, w["n1"])
    q, k, v = (jnp.einsum("BLD,DHK->BLHK", h, w[n]) for n in "qkv")
    s_BxHxLxL = jnp.einsum("BLHK,BMHK->BHLM", _rope(q), _rope(k)) / q.shape[-1]**0.5
    if causal:
      s_BxHxLxL = jnp.where(jnp.tril(jnp.ones((L, L), bool)), s_BxHxLxL, -1e30)
    o = jnp.einsum("BHLM,BMHK->BLHK", jax.nn.softmax(s_BxHxLxL, -1), v)
    x = x + jnp.einsum("BLHK,HKD->BLD", o, w["o"])
    h = _norm(x, w["n2"])
    x = x + (jax.nn.silu(h @ w["g"]) * (h @ w["u"])) @ w["w"]
  logits = _norm(x, p["norm"]) @ p["emb"].T
  return logits.at[..., -1].set(-jnp.inf)


def loss_fn(p: dict, tokens_BxL, key, objective: str):
  V = p["emb"].shape[0]
  if objective == "ar":
    logp = jax.nn.log_softmax(forward(p, tokens_BxL, True)[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, tokens_BxL[:, 1:, None], -1))
  B, L = tokens_BxL.shape
  t_B = jnp.maximum(jnp.mod(jax.random.uniform(key) + jnp.arange(B) / B, 1.0), 1e-3)
  m_BxL = jax.random.uniform(jax.random.fold_in(key, 1), (B, L)) < t_B[:, None]
  logp = jax.nn.log_softmax(forward(p, jnp.where(m_BxL, V - 1, tokens_BxL), False))
  nll_BxL = -jnp.take_along_axis(logp, tokens_BxL[..., None], -1)[..., 0]
  return jnp.mean(jnp.sum(jnp.where(m_BxL, nll_BxL, 0.0), -1) / (t_B * L))


def init_state(key, V: int, D: int, n_layers: int, H: int, F: int) -> tuple:
  """(params, Adam m, Adam v, step): what make_step's function carries from step to step."""
  p = init(key, V, D, n_layers, H, F)
  return p, jax.tree.map(jnp.zeros_like, p), jax.tree.map(jnp.zeros_like, p), jnp.zeros((), jnp.int32)


def make_step(objective: str, lr: float = 1e-3, b1=0.9, b2=0.95, wd=0.1, clip=1.0,
              compiler_options: dict[str, str] | None = None):
  """(state, tokens) -> (state, {"loss"}): AdamW with global-norm clipping, donated state, the
  same calling convention as dlmscale.train.steps's train_step."""
  def step(state, tokens_BxL):
    p, m, v, i = state
    loss, g = jax.value_and_grad(loss_fn)(p, tokens_BxL, jax.random.fold_in(jax.random.key(0), i),
                                          objective)
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g)))
    g = jax.tree.map(lambda x: x * jnp.minimum(1.0, clip / norm), g)
    m = jax.tree.map(lambda a, x: b1 * a + (1 - b1) * x, m, g)
    v = jax.tree.map(lambda a, x: b2 * a + (1 - b2) * x * x, v, g)
    c1, c2 = 1 - b1**(i + 1.0), 1 - b2**(i + 1.0)
    p = jax.tree.map(lambda w, a, b: w - lr * (a / c1 / (jnp.sqrt(b / c2) + 1e-8) + wd * w), p, m, v)
    return (p, m, v, i + 1), {"loss": loss}
  return jax.jit(step, donate_argnums=0, compiler_options=compiler_options)
