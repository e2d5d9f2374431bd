"""The three requests of an evaluation harness (EleutherAI's lm-eval), answered for a loaded run.

lm-eval asks a model for three things; each is answered here exactly as the project already scores:

  loglikelihood(context, continuation)  log p(continuation | context): AR the exact sum of next-token
      log-probabilities; diffusion minus the conditional ELBO (or the left-to-right chain) with only
      the continuation masked: `choices.score_items`, the scorer `python -m dlmscale.evaluate` uses.
      Requests that share a (task, document) become one item whose choices are their continuations,
      seeded by the document's index, so a multiple-choice task scores the same numbers as the
      evaluator's task file holding the same items in the same order.
  loglikelihood_rolling(text)  log p(text): AR exact (windows of seq_len - 1 tokens, each conditioned
      on the seq_len - 1 before it); diffusion the sum of the windows' conditional ELBOs (a bound).
  generate_until(context, until)  `eval/sampling.py` (AR greedy by default, diffusion confidence
      unmasking), cut at the first stop string.

Text is encoded with the run's tokenizer; a context starts with the end-of-document id, as the
evaluator's task files do (`task_file.tokenize`). This module does not import lm-eval: the adapter
class lm-eval sees is `eval/lm_eval_model.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dlmscale.data import pipeline
from dlmscale.eval import choices, sampling
from dlmscale.objectives.mdm import ElboSettings


@dataclasses.dataclass(frozen=True)
class Request:
  """One loglikelihood request; `group` names the item it belongs to (lm-eval: task and doc_id)."""
  context: str
  continuation: str
  group: Any = None
  doc_index: int | None = None  # the item's index (seeds its diffusion draws); None: request order


class Harness:
  """A loaded run (train/open_run.Loaded, or anything with its fields) answering harness requests."""

  def __init__(self, run, *, method: str, elbo: ElboSettings, batch_size: int):
    self.run, self.method, self.elbo, self.batch_size = run, method, elbo, int(batch_size)
    prepared, self.apply_fn = run.data.prepared, run.setup.apply_fn
    self.tok = pipeline.load_tokenizer(prepared)
    self.eod, self.mask_id = prepared.eod_id, prepared.mask_id
    self.max_len = run.setup.model_cfg.max_len

  def encode(self, text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in self.tok.encode(text)) if text else ()

  def decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode([int(i) for i in ids])

  def _score(self, items: Sequence[choices.McItem]) -> list[np.ndarray]:
    with jax.set_mesh(self.run.setup.mesh):
      return choices.score_items(
          self.run.params, self.apply_fn, items, method=self.method, max_len=self.max_len,
          pad_id=self.eod, mask_id=self.mask_id, batch_size=self.batch_size, elbo=self.elbo,
          put=self.run.setup.put_batches)

  def group_items(self, requests: Sequence[Request]) -> tuple[list[choices.McItem], list[tuple]]:
    """One item per group at its doc_index (gaps: a one-token dummy item, scored and ignored), and
    where each request landed as (item, choice)."""
    slots: dict[Any, int] = {}
    ctx: list[tuple[int, ...]] = []
    conts: list[list[tuple[int, ...]]] = []
    index: list[int] = []
    where = []
    for n, r in enumerate(requests):
      key = ("request", n) if r.group is None else r.group
      if key not in slots:
        slots[key] = len(ctx)
        ctx.append((self.eod, *self.encode(r.context)))
        conts.append([])
        index.append(len(ctx) - 1 if r.doc_index is None else int(r.doc_index))
      i = slots[key]
      cont = self.encode(r.continuation)
      if not cont:
        raise ValueError(f"request {n}: the continuation {r.continuation!r} encodes to no tokens")
      where.append((i, len(conts[i])))
      conts[i].append(cont[-(self.max_len - 1):])
    if len(set(index)) != len(index):
      raise ValueError("two request groups share one doc_index; give each task its own call")
    items = [choices.McItem((self.eod,), ((self.eod,),), 0)] * (max(index) + 1 if index else 0)
    for c, cs, i in zip(ctx, conts, index):
      items[i] = choices.McItem(c, tuple(cs), 0)
    return items, [(index[i], j) for i, j in where]

  def loglikelihood(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
    """(log-likelihood or its ELBO bound in nats, is the continuation the greedy one) per request."""
    items, where = self.group_items(requests)
    scores = self._score(items)
    greedy = self._greedy(items)
    return [(float(scores[i][j]), bool(greedy[i][j])) for i, j in where]

  def _greedy(self, items: Sequence[choices.McItem]) -> list[np.ndarray]:
    """AR: every continuation token is the argmax given what precedes it. Diffusion: every
    continuation token is the argmax with the whole continuation masked. Batched like the scores."""
    fn = _greedy_fn(self.apply_fn, self.method == "ar", self.mask_id)
    out = [np.zeros(len(item.choices), bool) for item in items]
    with jax.set_mesh(self.run.setup.mesh):
      for rows in choices.build_rows(items, self.max_len, self.eod):
        n = len(rows.where_N)
        for lo in range(0, n, self.batch_size):
          idx = np.minimum(np.arange(lo, lo + self.batch_size), n - 1)
          args = (rows.tokens_NxL[idx], rows.start_N[idx], rows.length_N[idx])
          ok = np.asarray(jax.device_get(fn(self.run.params, *map(self.run.put, args))))
          for r in range(lo, min(lo + self.batch_size, n)):
            i, j = rows.where_N[r]
            out[i][j] = ok[r - lo]
    return out

  def rolling_windows(self, text: str) -> list[choices.McItem]:
    """The text's tokens in windows of seq_len - 1, each with the tokens before it as context."""
    ids = (self.eod, *self.encode(text))
    w = self.max_len - 1
    return [choices.McItem(ids[max(0, lo - w):lo], (ids[lo:lo + w],), 0)
            for lo in range(1, len(ids), w)]

  def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
    """log p(text) (AR exact; diffusion the ELBO bound), summed over windows; item n seeds text n's
    windows by their position in the flat list."""
    windows = [self.rolling_windows(t) for t in texts]
    flat = [w for ws in windows for w in ws]
    scores = self._score(flat) if flat else []
    out, k = [], 0
    for ws in windows:
      out.append(float(sum(scores[k + m][0] for m in range(len(ws)))))
      k += len(ws)
    return out

  def generate(self, context: str, until: Sequence[str], max_tokens: int, *, temperature: float = 0.0,
               seed: int = 0, steps: int = 0) -> str:
    """A continuation of `context` (greedy by default), cut at end of document and the first stop."""
    prompt = [self.eod, *self.encode(context)]
    n = max(1, min(int(max_tokens), self.max_len - 1))
    common = dict(num_tokens=n, max_len=self.max_len, mask_id=self.mask_id, seed=seed,
                  temperature=float(temperature))
    if self.method == "ar":
      new = sampling.sample_ar(self.run.params, self.apply_fn, prompt, **common)
    else:
      new = sampling.sample_mdm(self.run.params, self.apply_fn, prompt, schedule=self.elbo.schedule,
                                steps=steps, method="confidence", **common)
    text = self.decode(sampling.until_eod(new, self.eod))
    for stop in until:
      if stop and stop in text:
        text = text[:text.index(stop)]
    return text


@functools.lru_cache(maxsize=8)
def _greedy_fn(apply_fn, causal: bool, mask_id: int):
  def fn(params, tokens_BxL, start_B, length_B):
    L = tokens_BxL.shape[1]
    pos_L = jnp.arange(L)
    cont_BxL = (pos_L[None] >= start_B[:, None]) & (pos_L[None] < (start_B + length_B)[:, None])
    if causal:  # position p's logits predict token p + 1
      pred_BxL = jnp.argmax(apply_fn(params, tokens_BxL), -1)
      hit_BxL = jnp.concatenate([jnp.ones_like(cont_BxL[:, :1]), pred_BxL[:, :-1] == tokens_BxL[:, 1:]], 1)
    else:
      pred_BxL = jnp.argmax(apply_fn(params, jnp.where(cont_BxL, mask_id, tokens_BxL)), -1)
      hit_BxL = pred_BxL == tokens_BxL
    return jnp.all(hit_BxL | ~cont_BxL, axis=-1)
  return jax.jit(fn)
