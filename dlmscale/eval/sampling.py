"""Generation from a prompt for both families, reproducible from a seed.

AR: one token at a time, temperature / top-k / top-p. Diffusion: the prompt followed by num_tokens
masks, revealed over S steps either ancestrally (each masked token is revealed between t and s < t
with probability (alpha(s) - alpha(t)) / (1 - alpha(t)), the reverse process the ELBO trains) or by
confidence (each step reveals the masked positions whose sampled token is most probable; the count
follows a linear schedule). Neither ever emits the mask id: its logit is -inf before sampling, and the
last diffusion step reveals every position still masked.

The whole sequence (prompt + new tokens) must fit in the model's context (data.seq_len); a long
prompt is cut from the left. The prompt starts with the end-of-document id, as documents do in
training.

`python -m dlmscale.sample` (dlmscale/commands/sample.py) samples from a saved run with these.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlmscale.errors import UserError
from dlmscale.objectives.masking import Schedule

METHODS = ("ancestral", "confidence")
ApplyFn = Callable[[Any, jax.Array], jax.Array]


def check_options(*, temperature: float, top_k: int, top_p: float, num_tokens: int, max_len: int,
                  steps: int = 1) -> None:
  if temperature < 0:
    raise UserError(f"--temperature={temperature} must be >= 0 (0 = greedy)")
  if top_k < 0:
    raise UserError(f"--top_k={top_k} must be >= 0 (0 = off)")
  if not 0.0 < top_p <= 1.0:
    raise UserError(f"--top_p={top_p} must be in (0, 1] (1 = off)")
  if not 1 <= num_tokens <= max_len - 1:
    raise UserError(f"--num_tokens={num_tokens} must be in 1..{max_len - 1}: prompt and new tokens "
                    f"share the model's context of seq_len={max_len} tokens")
  if steps < 1:
    raise UserError(f"--steps={steps} must be >= 1")


def filter_logits(logits_xV: jax.Array, *, mask_id: int, temperature: float, top_k: int,
                  top_p: float) -> jax.Array:
  """Logits to sample from: mask id removed, tempered, cut to the top-k and the top-p nucleus."""
  V = logits_xV.shape[-1]
  x = jnp.where(jnp.arange(V) == mask_id, -jnp.inf, logits_xV.astype(jnp.float32))
  if temperature > 0:
    x = x / temperature
  if 0 < top_k < V:
    kth = jax.lax.top_k(x, top_k)[0][..., -1:]
    x = jnp.where(x < kth, -jnp.inf, x)
  if top_p < 1.0:
    sorted_desc = -jnp.sort(-x, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
    cutoff = jnp.min(jnp.where(before < top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < cutoff, -jnp.inf, x)
  return x


def draw(key: jax.Array, logits_xV: jax.Array, temperature: float) -> jax.Array:
  """A token per row from filtered logits; temperature 0 is greedy."""
  if temperature == 0:
    return jnp.argmax(logits_xV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits_xV, axis=-1).astype(jnp.int32)


def fit_prompt(prompt_ids: Sequence[int], num_tokens: int, max_len: int) -> list[int]:
  return list(prompt_ids)[-(max_len - num_tokens):]


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=(
    "num_tokens", "mask_id", "temperature", "top_k", "top_p"))
def _ar_loop(params, apply_fn, prompt_P, key, *, num_tokens, mask_id, temperature, top_k, top_p):
  P = prompt_P.shape[0]
  buf_T = jnp.concatenate([prompt_P, jnp.zeros((num_tokens,), jnp.int32)])

  def body(i, buf_T):
    logits_V = apply_fn(params, buf_T[None])[0, i - 1]  # causal: the unwritten tail is not seen
    logits_V = filter_logits(logits_V, mask_id=mask_id, temperature=temperature, top_k=top_k,
                             top_p=top_p)
    return buf_T.at[i].set(draw(jax.random.fold_in(key, i), logits_V, temperature))

  return jax.lax.fori_loop(P, P + num_tokens, body, buf_T)[P:]


def sample_ar(params, apply_fn: ApplyFn, prompt_ids: Sequence[int], *, num_tokens: int,
              max_len: int, mask_id: int, seed: int = 0, temperature: float = 1.0, top_k: int = 0,
              top_p: float = 1.0) -> np.ndarray:
  """num_tokens new token ids after the prompt (a non-empty list of ids)."""
  check_options(temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens,
                max_len=max_len)
  prompt = jnp.asarray(fit_prompt(prompt_ids, num_tokens, max_len), jnp.int32)
  return np.asarray(_ar_loop(params, apply_fn, prompt, jax.random.PRNGKey(seed),
                             num_tokens=num_tokens, mask_id=mask_id, temperature=float(temperature),
                             top_k=int(top_k), top_p=float(top_p)))


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=(
    "num_tokens", "mask_id", "steps", "method", "schedule", "temperature", "top_k", "top_p"))
def _mdm_loop(params, apply_fn, prompt_P, key, *, num_tokens, mask_id, steps, method, schedule,
              temperature, top_k, top_p):
  P = prompt_P.shape[0]
  x_T = jnp.concatenate([prompt_P, jnp.full((num_tokens,), mask_id, jnp.int32)])

  def body(s, x_T):  # s = 0..steps-1 goes from t = 1 towards t = 0
    k_draw, k_reveal = jax.random.split(jax.random.fold_in(key, s))
    logits_TxV = filter_logits(apply_fn(params, x_T[None])[0], mask_id=mask_id,
                               temperature=temperature, top_k=top_k, top_p=top_p)
    x0_T = draw(k_draw, logits_TxV, temperature)
    masked_T = x_T == mask_id
    if method == "ancestral":
      t, t_next = 1.0 - s / steps, 1.0 - (s + 1) / steps
      a_t, a_next = schedule.alpha(t), schedule.alpha(t_next)
      p_reveal = jnp.where(s == steps - 1, 1.0, (a_next - a_t) / (1.0 - a_t))
      reveal_T = masked_T & (jax.random.uniform(k_reveal, masked_T.shape) < p_reveal)
    else:  # confidence: the most probable sampled tokens first, N * (s+1) / S revealed after step s
      logp_T = jnp.take_along_axis(jax.nn.log_softmax(logits_TxV, -1), x0_T[:, None], -1)[:, 0]
      conf_T = jnp.where(masked_T, logp_T, -jnp.inf)
      n_now = (num_tokens * (s + 1)) // steps - (num_tokens * s) // steps
      rank_T = jnp.argsort(jnp.argsort(-conf_T))
      reveal_T = masked_T & (rank_T < n_now)
    return jnp.where(reveal_T, x0_T, x_T)

  return jax.lax.fori_loop(0, steps, body, x_T)[P:]


def sample_mdm(params, apply_fn: ApplyFn, prompt_ids: Sequence[int], *, num_tokens: int,
               max_len: int, mask_id: int, schedule: Schedule, steps: int = 0,
               method: str = "ancestral", seed: int = 0, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0) -> np.ndarray:
  """num_tokens new ids after the prompt, revealed over `steps` (0 = num_tokens) denoising steps."""
  steps = steps or num_tokens
  check_options(temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens,
                max_len=max_len, steps=steps)
  if method not in METHODS:
    raise UserError(f"--method={method!r}: choose one of {', '.join(METHODS)}")
  prompt = jnp.asarray(fit_prompt(prompt_ids, num_tokens, max_len), jnp.int32)
  return np.asarray(_mdm_loop(params, apply_fn, prompt, jax.random.PRNGKey(seed),
                              num_tokens=num_tokens, mask_id=mask_id, steps=int(steps),
                              method=method, schedule=schedule, temperature=float(temperature),
                              top_k=int(top_k), top_p=float(top_p)))


def until_eod(ids: Sequence[int], eod_id: int) -> list[int]:
  """Text stops at the end of the document."""
  ids = [int(i) for i in ids]
  return ids[:ids.index(eod_id)] if eod_id in ids else ids
