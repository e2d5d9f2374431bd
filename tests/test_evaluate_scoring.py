"""Multiple-choice scoring: exact on toy models, chance on identical choices, the ELBO against enumeration.

No training here: toy apply_fns with chosen logits, and tiny random Transformers.
"""

from __future__ import annotations

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlmscale.eval import builtin_task
from dlmscale.eval import choices as mc_scoring
from dlmscale.eval import task_file
from dlmscale.model import transformer as model_lib
from dlmscale.errors import UserError
from dlmscale.objectives.mdm import ElboSettings
from dlmscale.objectives.masking import LinearSchedule

V, MASK = 8, 7  # toy vocabulary: ids 0..6 are tokens, 7 is <mask>
SURE = 3  # the only token the toy model gives non-zero probability


def _toy_apply(params, tokens_BxL):
  """Every position puts all mass on token SURE, whatever the input (a fixed model, no params)."""
  del params
  logits_V = jnp.where(jnp.arange(V) == SURE, 0.0, -1e9)
  return jnp.broadcast_to(logits_V, (*tokens_BxL.shape, V))


def _tiny_model(causal: bool, vocab: int = V, max_len: int = 16, scale: float = 1.0, seed: int = 0):
  cfg = model_lib.ModelConfig(vocab_size=vocab, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                              max_len=max_len, causal=causal)
  model = model_lib.Transformer(cfg)
  params = model.init(jax.random.key(seed), jnp.zeros((1, max_len), jnp.int32))["params"]
  params = jax.tree.map(lambda p: p * scale, jax.tree.map(jnp.asarray, params))
  return params, jax.jit(lambda p, t: model.apply({"params": p}, t))


def _score(params, apply_fn, items, method, max_len=16, batch_size=4, num_samples=8, seed=0):
  scores = mc_scoring.score_items(params, apply_fn, items, method=method, max_len=max_len,
                                  pad_id=1, mask_id=MASK, batch_size=batch_size,
                                  elbo=ElboSettings(LinearSchedule(), num_samples, seed))
  return mc_scoring.accuracy(items, scores)


@pytest.mark.parametrize("method", ["ar", "elbo", "chain"])
def test_only_possible_choice_always_wins(method):
  rng = np.random.default_rng(0)
  items = []
  for i in range(12):
    m = 2 + i % 3
    right = (SURE,) * m
    wrong = [tuple(int(x) for x in rng.choice([0, 1, 2, 4, 5, 6], size=m)) for _ in range(3)]
    label = i % 4
    choices = wrong[:label] + [right] + wrong[label:]
    items.append(mc_scoring.McItem(tuple(int(x) for x in rng.integers(0, 7, 5)), tuple(choices), label))
  r = _score(None, _toy_apply, items, method)
  assert r.accuracy == 1.0 and r.accuracy_se == 0.0 and r.n_items == 12
  for item, s in zip(items, r.scores):  # the right choice has probability 1: log-likelihood 0
    assert s[item.label] == pytest.approx(0.0, abs=1e-6)
    assert all(s[j] < -1e6 for j in range(4) if j != item.label)


@pytest.mark.parametrize("method", ["ar", "elbo", "chain"])
def test_identical_choices_score_exactly_chance(method):
  params, apply_fn = _tiny_model(causal=method == "ar", scale=4.0)
  rng = np.random.default_rng(1)
  items = [mc_scoring.McItem(tuple(int(x) for x in rng.integers(0, 7, 4 + i % 5)),
                             (tuple(int(x) for x in rng.integers(0, 7, 3)),) * 4, i % 4)
           for i in range(8)]
  r = _score(params, apply_fn, items, method, batch_size=3)  # 32 rows: batches split items
  assert r.accuracy == pytest.approx(0.25, abs=1e-12) and r.accuracy_norm == pytest.approx(0.25)
  firsts = [s[0] for s in r.scores]
  assert np.all(np.isfinite(firsts)) and np.ptp(firsts) > 1e-3  # a real model: scores differ by item


def test_tie_credit_is_shared():
  assert mc_scoring.credit(np.array([-1.0, -1.0, -3.0]), 0) == 0.5
  assert mc_scoring.credit(np.array([-1.0, -1.0, -3.0]), 2) == 0.0
  assert mc_scoring.credit(np.array([-2.0, -1.0, -3.0]), 1) == 1.0


SMALL_V, SMALL_MASK = 5, 4  # enumeration tests: 4 tokens and <mask>


def _nll_rows(params, apply_fn, xs_NxL, targets) -> np.ndarray:
  """-log p(target | x_n) at (row, position, token) triples, float64, mask id out of the support."""
  logits = np.asarray(apply_fn(params, jnp.asarray(xs_NxL, jnp.int32)), np.float64)
  logits[..., SMALL_MASK] = -np.inf
  logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  return np.array([-logp[n, pos, tok] for n, pos, tok in targets])


def _orders_nll(params, apply_fn, ctx, choice) -> np.ndarray:
  """NLL of the choice revealed in each order (all m!): a token is scored with later ones masked."""
  seq, start, m = list(ctx) + list(choice), len(ctx), len(choice)
  orders = list(itertools.permutations(range(m)))
  xs, targets = [], []
  for order in orders:
    for step, j in enumerate(order):
      hidden = set(order[step:])
      targets.append((len(xs), start + j, seq[start + j]))
      xs.append([SMALL_MASK if (i - start) in hidden else t for i, t in enumerate(seq)])
  return _nll_rows(params, apply_fn, xs, targets).reshape(len(orders), m).sum(-1)


def _enumerated_elbo(params, apply_fn, ctx, choices) -> np.ndarray:
  """Exact E_t[w(t) sum_masked nll] per choice: mask sets S weighted 1 / (|S| C(m, |S|))."""
  xs, targets, weights, owner = [], [], [], []
  for c_idx, choice in enumerate(choices):
    seq, m, start = list(ctx) + list(choice), len(choice), len(ctx)
    for k in range(1, m + 1):
      for S in itertools.combinations(range(m), k):
        for j in S:
          targets.append((len(xs), start + j, seq[start + j]))
          weights.append(1.0 / (k * math.comb(m, k)))
          owner.append(c_idx)
        xs.append([SMALL_MASK if (i - start) in S else t for i, t in enumerate(seq)])
  terms = _nll_rows(params, apply_fn, xs, targets) * np.array(weights)
  return np.bincount(owner, weights=terms, minlength=len(choices))


@pytest.mark.parametrize("estimator,k", [("time", 512), ("count", 64)])
def test_conditional_elbo_equals_exact_enumeration(estimator, k):
  params, apply_fn = _tiny_model(causal=False, vocab=SMALL_V, max_len=8, scale=6.0, seed=3)
  ctx, choice = (0, 2, 1, 3, 0), (1, 3, 2)
  exact = float(_enumerated_elbo(params, apply_fn, ctx, [choice])[0])
  # The enumeration is the average over all unmasking orders of the chain-rule NLL.
  orders = _orders_nll(params, apply_fn, ctx, choice)
  assert exact == pytest.approx(np.mean(orders), rel=1e-6)
  assert np.ptp(orders) > 0.05  # orders disagree: the check above is not vacuous
  # K stratified samples for each of 64 copies (different item ids: independent draws).
  n = 64
  tokens = jnp.asarray([list(ctx) + list(choice)] * n, jnp.int32)
  args = (tokens, jnp.full((n,), 5), jnp.full((n,), 3), jnp.arange(n))
  per_item = np.asarray(mc_scoring.choice_elbo_samples(
      params, apply_fn, *args, mask_id=SMALL_MASK, schedule=LinearSchedule(), num_samples=k,
      seed=0, estimator=estimator), np.float64).mean(0)
  mc, se = per_item.mean(), per_item.std(ddof=1) / np.sqrt(n)
  assert abs(mc - exact) < 4 * se + 1e-4 * exact, (mc, exact, se)
  assert se < 0.02 * exact  # sharp: e.g. dropping the 1/|S| in the weight gives 4.18, not 6.77
  # Left-to-right chain: exactly the chain rule for that order.
  chain = -np.asarray(mc_scoring.mdm_chain_logprob(params, apply_fn, *args, mask_id=SMALL_MASK,
                                                   max_choice_len=3))
  np.testing.assert_allclose(chain, orders[0], rtol=1e-5)


def test_chain_is_a_normalised_distribution_and_bounds_the_elbo():
  params, apply_fn = _tiny_model(causal=False, vocab=SMALL_V, max_len=8, scale=6.0, seed=4)
  ctx = (2, 0, 1)
  all_choices = list(itertools.product(range(4), repeat=3))
  tokens = jnp.asarray([list(ctx) + list(c) for c in all_choices], jnp.int32)
  n = len(all_choices)
  args = (tokens, jnp.full((n,), 3), jnp.full((n,), 3), jnp.zeros((n,), jnp.int32))
  chain = np.asarray(mc_scoring.mdm_chain_logprob(params, apply_fn, *args, mask_id=SMALL_MASK,
                                                  max_choice_len=3), np.float64)
  assert np.exp(chain).sum() == pytest.approx(1.0, abs=1e-4)
  # The ELBO bounds the likelihood of the random-order sampler: its total mass is at most 1.
  elbo = _enumerated_elbo(params, apply_fn, ctx, all_choices)
  assert np.all(elbo > 0) and 0.5 < np.exp(-elbo).sum() < 1.0


def test_scores_do_not_depend_on_batching_or_neighbours():
  params, apply_fn = _tiny_model(causal=False, scale=4.0)
  rng = np.random.default_rng(2)
  items = [mc_scoring.McItem(tuple(int(x) for x in rng.integers(0, 7, 3 + i)),
                             tuple(tuple(int(x) for x in rng.integers(0, 7, 1 + (i + j) % 4))
                                   for j in range(3)), 0) for i in range(5)]
  a = _score(params, apply_fn, items, "elbo", batch_size=2, num_samples=2).scores
  b = _score(params, apply_fn, items, "elbo", batch_size=16, num_samples=2).scores
  c = _score(params, apply_fn, items[:2], "elbo", batch_size=16, num_samples=2).scores
  np.testing.assert_allclose(np.concatenate(a), np.concatenate(b), rtol=1e-6)
  np.testing.assert_allclose(np.concatenate(a[:2]), np.concatenate(c), rtol=1e-6)
  other_seed = _score(params, apply_fn, items, "elbo", batch_size=16, num_samples=2, seed=1).scores
  assert not np.allclose(np.concatenate(other_seed), np.concatenate(b))  # the seed is used


def test_long_context_is_cut_from_the_left():
  items = [mc_scoring.McItem(tuple(range(7)) * 5, ((SURE, SURE), (0, 1)), 0)]
  rows = mc_scoring.build_rows(items, max_len=16, pad_id=1)
  assert len(rows) == 1 and rows[0].tokens_NxL.shape == (2, 16)
  assert list(rows[0].tokens_NxL[0, -2:]) == [SURE, SURE] and list(rows[0].start_N) == [14, 14]
  with pytest.raises(ValueError, match="choice 0 has 16 tokens"):
    mc_scoring.build_rows([mc_scoring.McItem((1,), ((2,) * 16, (3,)), 0)], 16, 1)


# --- the built-in task ---------------------------------------------------------------------------

EOD = 1


def _stream(n_docs: int, doc_len: int) -> np.ndarray:
  """Documents of distinct ascending tokens (doc d: 100 * d + position), each followed by eod."""
  parts = []
  for d in range(n_docs):
    parts += [list(range(1000 * (d + 1), 1000 * (d + 1) + doc_len)), [EOD]]
  stream = np.concatenate(parts)
  return stream[:len(stream) // 32 * 32].reshape(-1, 32)


def test_builtin_task_true_continuation_and_foreign_distractors():
  chunks = _stream(n_docs=6, doc_len=150)
  items = builtin_task.make_task(chunks, EOD, seq_len=32, n_items=20, n_choices=4, seed=0)
  assert len(items) == 20
  assert builtin_task.make_task(chunks, EOD, 32, n_items=20, seed=0) == items  # deterministic
  assert builtin_task.make_task(chunks, EOD, 32, n_items=20, seed=1) != items
  ctx_len, cont_len = builtin_task.default_lengths(32)
  for item in items:
    assert len(item.context) == ctx_len and all(len(c) == cont_len for c in item.choices)
    doc = item.context[0] // 1000
    true = item.choices[item.label]
    assert true[0] == item.context[-1] + 1 and np.all(np.diff(true) == 1)  # it follows the context
    others = [c for j, c in enumerate(item.choices) if j != item.label]
    assert all(c[0] // 1000 != doc for c in others) and len(set(item.choices)) == 4
    assert EOD not in item.context and all(EOD not in c for c in item.choices)
  assert len({item.label for item in items}) == 4  # the answer is not always in one place


def test_builtin_task_needs_two_documents():
  with pytest.raises(UserError, match="2 or more"):
    builtin_task.make_task(_stream(n_docs=1, doc_len=300), EOD, seq_len=32)


# --- task files ----------------------------------------------------------------------------------


def _write(tmp_path, lines):
  p = tmp_path / "task.jsonl"
  p.write_text("\n".join(lines) + "\n")
  return p


GOOD = json.dumps({"context": "a b", "choices": [" c", " d"], "label": 1})


def test_task_file_reads_items(tmp_path):
  items = task_file.read_task(_write(tmp_path, [GOOD, "", GOOD]))
  assert [(i.line, i.label, i.choices) for i in items] == [(1, 1, (" c", " d")), (3, 1, (" c", " d"))]


@pytest.mark.parametrize("bad,needle", [
    ('{"context": "x", "choices": ["a", "b"], "label": 1', "line 2: not valid JSON"),
    ('{"context": "x", "choices": ["a", "b"], "label": 2}', "line 2: label 2 is out of range"),
    ('{"context": "x", "choices": ["a", "b"], "label": -1}', "line 2: label -1 is out of range"),
    ('{"context": "x", "choices": ["a", "b"]}', "line 2: missing key(s) label"),
    ('{"context": "x", "choices": ["a"], "label": 0}', "line 2: choices must be a list of at least 2"),
    ('{"context": "x", "choices": ["a", "b"], "label": "0"}', "line 2: label must be an integer"),
    ('["x"]', "line 2: expected a JSON object"),
])
def test_task_file_errors_name_the_line(tmp_path, bad, needle):
  with pytest.raises(UserError) as e:
    task_file.read_task(_write(tmp_path, [GOOD, bad, GOOD]))
  assert needle in str(e.value)


def test_task_file_choice_longer_than_the_context_window(tmp_path):
  class Chars:  # a stand-in tokenizer: one token per character
    def encode(self, s):
      return [ord(ch) % 50 + 2 for ch in s]
  items = task_file.read_task(_write(tmp_path, [GOOD, json.dumps(
      {"context": "q", "choices": ["short", "x" * 40], "label": 0})]))
  assert task_file.tokenize(items[:1], Chars(), EOD, 16)[0].context[0] == EOD
  with pytest.raises(UserError, match="line 2: choice 1 is 40 tokens"):
    task_file.tokenize(items, Chars(), EOD, 16)
