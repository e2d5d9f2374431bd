"""Multiple-choice scoring for both families: which choice does the model find most likely?

Each (item, choice) becomes one row: context + choice, cut from the left to the model's max_len.
A score is a log-likelihood of the choice given the context (higher is better):

  ar     exact sum of log p(c_i | context, c_<i) (next-token, causal model).
  elbo   diffusion: minus the conditional ELBO with only the choice positions ever masked: K stratified
         times t, each choice token masked with probability 1 - alpha(t), weight w(t) times the sum of
         -log p(c_i | x_t) over masked i. Its expectation equals the average over uniformly random
         unmasking orders of the chain-rule NLL, a bound on -log p(choice | context). Estimator
         "count" weights the same draws by E[w(t) | mask set] instead: same mean, less noise.
  chain  diffusion: unmask the choice left to right, scoring token i with c_<i visible and c_>=i
         masked: the exact likelihood of that one ordering (m forward passes per choice).

Rows are padded on the right with eod, never masked and never scored, to a length bucket (a
multiple of PAD_MULTIPLE, at most max_len) that depends on the row alone; the time samples and mask
draws of an item depend only on the item's index. So a score does not depend on the batch size, the
device count, or which other rows share a batch. The diffusion model does see the eod padding as
visible text after the choice ("the document ends here"), the same for every choice of an item; a
task whose rows all have one length (the built-in task) has no padding at all.

All choices of an item share the same time samples and mask draws (common random numbers), so
identical choices get identical scores and the comparison between choices has less noise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlmscale.eval.val_loss import padded_rows
from dlmscale.objectives.masking import Schedule
from dlmscale.objectives.mdm import ElboSettings, elbo_draws, elbo_weights
from dlmscale.objectives.nll import token_nll

METHODS = ("ar", "elbo", "chain")
PAD_MULTIPLE = 16
TIE_RTOL = 1e-6  # scores this close are a tie (float rounding between batch rows), credited evenly

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class McItem:
  context: tuple[int, ...]  # token ids (at least one: the AR model needs a token before the choice)
  choices: tuple[tuple[int, ...], ...]
  label: int


@dataclasses.dataclass(frozen=True)
class McResult:
  accuracy: float  # mean credit: 1 if the label scores highest, 1/n on an n-way tie that includes it
  accuracy_se: float  # standard error over items
  accuracy_norm: float  # the same with scores divided by the choice length in tokens
  accuracy_norm_se: float
  n_items: int
  scores: list[np.ndarray]  # per item, one log-likelihood (or its bound) per choice, nats


@dataclasses.dataclass(frozen=True)
class _Rows:
  """Rows of one length bucket, as arrays ready for the device."""
  tokens_NxL: np.ndarray
  start_N: np.ndarray  # index of the first choice token
  length_N: np.ndarray  # number of choice tokens
  item_N: np.ndarray  # the item's index: seeds its diffusion samples
  where_N: list[tuple[int, int]]  # (item, choice) each row scores


def bucket_length(n: int, max_len: int) -> int:
  return min(max_len, math.ceil(n / PAD_MULTIPLE) * PAD_MULTIPLE)


def check_item(item: McItem, max_len: int, what: str = "item") -> None:
  """A choice must fit beside at least one context token, or it cannot be scored in full."""
  if not item.context:
    raise ValueError(f"{what}: empty context (prepend the end-of-document id)")
  if not 0 <= item.label < len(item.choices):
    raise ValueError(f"{what}: label {item.label} is not in 0..{len(item.choices) - 1}")
  for j, c in enumerate(item.choices):
    if not 0 < len(c) <= max_len - 1:
      raise ValueError(f"{what}: choice {j} has {len(c)} tokens; it needs 1..{max_len - 1} "
                       f"(the model's seq_len - 1)")


def build_rows(items: Sequence[McItem], max_len: int, pad_id: int) -> list[_Rows]:
  """Context + choice cut from the left to max_len, padded to its bucket; one _Rows per bucket."""
  by_len: dict[int, list] = {}
  for i, item in enumerate(items):
    check_item(item, max_len, f"item {i}")
    for j, choice in enumerate(item.choices):
      seq = (list(item.context) + list(choice))[-max_len:]
      L = bucket_length(len(seq), max_len)
      by_len.setdefault(L, []).append((seq, len(seq) - len(choice), len(choice), i, (i, j)))
  out = []
  for L in sorted(by_len):
    rows = by_len[L]
    tokens = np.full((len(rows), L), pad_id, np.int32)
    for r, (seq, *_rest) in enumerate(rows):
      tokens[r, :len(seq)] = seq
    out.append(_Rows(tokens, np.array([r[1] for r in rows], np.int32),
                     np.array([r[2] for r in rows], np.int32),
                     np.array([r[3] for r in rows], np.int32), [r[4] for r in rows]))
  return out


def _choice_mask(L: int, start_B: jax.Array, length_B: jax.Array) -> jax.Array:
  pos_L = jnp.arange(L)
  return (pos_L[None] >= start_B[:, None]) & (pos_L[None] < (start_B + length_B)[:, None])


def ar_logprob(params, apply_fn: ApplyFn, tokens_BxL, start_B, length_B, item_B, *,
               mask_id: int) -> jax.Array:
  """Sum of log p(choice token | everything before it); position p's logits predict token p + 1."""
  del item_B
  L = tokens_BxL.shape[1]
  nll_BxL1 = token_nll(apply_fn(params, tokens_BxL)[:, :-1], tokens_BxL[:, 1:], mask_id)
  scored_BxL1 = _choice_mask(L, start_B, length_B)[:, 1:]
  return -jnp.sum(jnp.where(scored_BxL1, nll_BxL1, 0.0), axis=-1)


def choice_draws(params, apply_fn: ApplyFn, tokens_BxL, start_B, length_B, item_B, *,
                 mask_id: int, schedule: Schedule, num_samples: int, seed: int,
                 t_min: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """objectives.elbo_draws with only the choice positions maskable and item i seeded by its index:
  t, the number masked and their summed NLL, each [K, B].

  With the whole sequence as the choice (and the same t_min) these are exactly the draws of the
  unconditional ELBO. t_min > 0 clips t as training does (bounded 1/t weight, O(t_min^2) bias); the
  count estimator wants t_min = 0 (its weight is exact for t ~ U(0, 1) and bounded anyway).
  """
  maskable_BxL = _choice_mask(tokens_BxL.shape[1], start_B, length_B)
  return elbo_draws(params, apply_fn, tokens_BxL, item_B, maskable_BxL, mask_id=mask_id,
                    schedule=schedule, num_samples=num_samples, seed=seed, t_min=t_min)


def choice_elbo_samples(params, apply_fn: ApplyFn, tokens_BxL, start_B, length_B, item_B, *,
                        mask_id: int, schedule: Schedule, num_samples: int, seed: int,
                        estimator: str = "time", t_min: float = 0.0) -> jax.Array:
  """K conditional-ELBO terms [K, B] (nats for the whole choice); their mean estimates the bound."""
  t_KxB, n_KxB, sum_KxB = choice_draws(params, apply_fn, tokens_BxL, start_B, length_B, item_B,
                                       mask_id=mask_id, schedule=schedule,
                                       num_samples=num_samples, seed=seed, t_min=t_min)
  return elbo_weights(estimator, schedule, t_KxB, n_KxB, length_B) * sum_KxB


def mdm_elbo_score(params, apply_fn: ApplyFn, tokens_BxL, start_B, length_B, item_B, **kw
                   ) -> jax.Array:
  return -jnp.mean(choice_elbo_samples(params, apply_fn, tokens_BxL, start_B, length_B, item_B, **kw),
                   axis=0)


def mdm_chain_logprob(params, apply_fn: ApplyFn, tokens_BxL, start_B, length_B, item_B, *,
                      mask_id: int, max_choice_len: int) -> jax.Array:
  """Left-to-right chain: step j scores choice token j with choice tokens j.. masked."""
  del item_B
  L = tokens_BxL.shape[1]
  pos_L = jnp.arange(L)
  choice_BxL = _choice_mask(L, start_B, length_B)

  def one_step(j: jax.Array) -> jax.Array:
    hidden_BxL = choice_BxL & (pos_L[None] >= (start_B + j)[:, None])
    nll_BxL = token_nll(apply_fn(params, jnp.where(hidden_BxL, mask_id, tokens_BxL)), tokens_BxL,
                        mask_id)
    scored_BxL = (pos_L[None] == (start_B + j)[:, None]) & (j < length_B)[:, None]
    return jnp.sum(jnp.where(scored_BxL, nll_BxL, 0.0), axis=-1)

  return -jnp.sum(jax.lax.map(one_step, jnp.arange(max_choice_len)), axis=0)


def _batch_scorer(method: str, apply_fn: ApplyFn, mask_id: int, elbo: ElboSettings | None,
                  max_choice_len: int) -> Callable:
  """(params, tokens_BxL, start_B, length_B, item_B) -> score_B for one method."""
  if method == "ar":
    return lambda p, *a: ar_logprob(p, apply_fn, *a, mask_id=mask_id)
  if method == "elbo":
    if elbo is None or elbo.num_samples < 1:
      raise ValueError(f"the elbo method needs ElboSettings with num_samples >= 1, got {elbo}")
    return lambda p, *a: mdm_elbo_score(p, apply_fn, *a, mask_id=mask_id, schedule=elbo.schedule,
                                        num_samples=elbo.num_samples, seed=elbo.seed,
                                        estimator=elbo.estimator, t_min=elbo.clipped)
  if method == "chain":
    return lambda p, *a: mdm_chain_logprob(p, apply_fn, *a, mask_id=mask_id, max_choice_len=max_choice_len)
  raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")


@functools.lru_cache(maxsize=32)  # one jitted scorer per setting: every evaluation reuses its programs
def make_scorer(method: str, apply_fn: ApplyFn, *, mask_id: int, elbo: ElboSettings | None = None,
                max_choice_len: int = 1) -> Callable:
  """jit(params, tokens_NbxBxL, start_NbxB, length_NbxB, item_NbxB) -> score_NbxB: the method's
  batch scorer on each batch in turn (lax.map), so a length bucket is one program and one dispatch.

  Cached by (method, apply_fn, settings): a trainer's apply_fn is its compiled shape's
  (steps._Programs), so the task scored at every evaluation of every run of that shape traces and
  compiles once per bucket shape.
  """
  score_batch = _batch_scorer(method, apply_fn, mask_id, elbo, max_choice_len)
  return jax.jit(lambda p, *a_Nb: jax.lax.map(lambda a: score_batch(p, *a), a_Nb))


def score_items(params, apply_fn: ApplyFn, items: Sequence[McItem], *, method: str, max_len: int,
                pad_id: int, mask_id: int, batch_size: int, elbo: ElboSettings | None = None,
                put: Callable[[np.ndarray], jax.Array] = jnp.asarray) -> list[np.ndarray]:
  """One score per choice of every item (nats); batches are padded by repeating a row, then cropped.

  Each length bucket's batches go to the devices as one [n_batches, B, ...] array (`put` places
  such an array every host holds in full: steps.Setup.put_batches) and are scored by one program;
  every bucket is dispatched before the scores come back in one transfer. `elbo` says how the
  diffusion ELBO is estimated (method "elbo" only; see ElboSettings).
  """
  if not items:
    return []
  max_choice = max(len(c) for item in items for c in item.choices) if method == "chain" else 1
  scorer = make_scorer(method, apply_fn, mask_id=mask_id, elbo=elbo, max_choice_len=max_choice)
  buckets = build_rows(items, max_len, pad_id)
  out = []
  for rows in buckets:
    idx_NbxB = padded_rows(len(rows.where_N), batch_size)
    args = (rows.tokens_NxL[idx_NbxB], rows.start_N[idx_NbxB], rows.length_N[idx_NbxB], rows.item_N[idx_NbxB])
    out.append(scorer(params, *map(put, args)))
  scores = [np.full(len(item.choices), np.nan) for item in items]
  for rows, score_NbxB in zip(buckets, jax.device_get(out)):
    score_N = np.asarray(score_NbxB, np.float64).reshape(-1)
    for r, (i, j) in enumerate(rows.where_N):
      scores[i][j] = score_N[r]
  return scores


def credit(scores: np.ndarray, label: int) -> float:
  """1/|ties| if the label is among the best-scoring choices, else 0 (random tie-breaking)."""
  s = np.asarray(scores, np.float64)
  best = np.max(s)
  tol = TIE_RTOL * max(abs(best), 1.0) if np.isfinite(best) else 0.0
  tied = s >= best - tol
  return float(tied[label]) / float(np.sum(tied))


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  se = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
  return float(np.mean(v)), se


def accuracy(items: Sequence[McItem], scores: Sequence[np.ndarray]) -> McResult:
  raw = [credit(s, item.label) for item, s in zip(items, scores)]
  norm = [credit(s / np.array([len(c) for c in item.choices], np.float64), item.label)
          for item, s in zip(items, scores)]
  acc, se = mean_and_se(raw)
  acc_n, se_n = mean_and_se(norm)
  return McResult(acc, se, acc_n, se_n, len(items), list(scores))
