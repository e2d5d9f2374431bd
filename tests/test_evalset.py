"""The eval set spans the validation documents, and its errors are clustered by document."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config
from dlmscale.train import loop as train
from dlmscale.eval import val_loss as validation
from dlmscale import run_dir as rundir
from dlmscale.data import evalset, pipeline
from dlmscale.errors import UserError

EOD = 1


def _stream(doc_lengths, seq_len):
  """Chunks of documents 0, 1, ... (token = 10 + document id), each followed by EOD."""
  toks = np.concatenate([np.append(np.full(n, 10 + i), EOD) for i, n in enumerate(doc_lengths)])
  n = toks.size // seq_len
  return toks[:n * seq_len].reshape(n, seq_len)


def test_chunk_documents_follow_the_end_of_document_marker():
  chunks_NxL = _stream([20, 3, 9, 40], seq_len=8)
  doc_N = evalset.chunk_documents(chunks_NxL, EOD)
  middle_tokens = chunks_NxL[:, 4]
  want = np.where(middle_tokens == EOD, -1, middle_tokens - 10)
  # the eod after a document belongs to that document: resolve it by the token before it
  flat = chunks_NxL.reshape(-1)
  for i in np.flatnonzero(want < 0):
    want[i] = flat[i * 8 + 3] - 10
  np.testing.assert_array_equal(doc_N, want)


def test_round_robin_covers_every_document_before_repeating_one():
  doc_N = np.repeat(np.arange(30), np.arange(1, 31))  # document d has d + 1 chunks
  ids = evalset.round_robin(doc_N, 30, seed=0)
  assert np.unique(doc_N[ids]).size == 30  # one chunk of each
  ids = evalset.round_robin(doc_N, 100, seed=0)
  counts = np.bincount(doc_N[ids], minlength=30)
  # rounds: all 30, then the 29 with >= 2 chunks, then the 28 with >= 3 (87), then 13 of the rest
  assert counts.max() == 4 and counts[0] == 1 and counts[1] == 2 and np.all(counts[3:] >= 3)
  assert ids.size == np.unique(ids).size == 100 and np.all(np.diff(ids) > 0)
  np.testing.assert_array_equal(ids, evalset.round_robin(doc_N, 100, seed=0))
  assert not np.array_equal(ids, evalset.round_robin(doc_N, 100, seed=1))


def test_draw_is_a_function_of_the_data_and_checks_its_size():
  chunks_NxL = _stream([50] * 12 + [300], seq_len=16)
  a = evalset.draw(chunks_NxL, EOD, 12, seed=3)
  b = evalset.draw(np.array(chunks_NxL), EOD, 12, seed=3)
  np.testing.assert_array_equal(a.chunk_ids_N, b.chunk_ids_N)
  n_val_docs = 13 - evalset.tune_documents(evalset.chunk_documents(chunks_NxL, EOD), 3).size
  assert a.n_documents == n_val_docs  # every val document; the long last one does not take over the set
  assert np.bincount(a.document_N).max() <= 2
  np.testing.assert_array_equal(a.tokens_NxL, chunks_NxL[a.chunk_ids_N])
  with pytest.raises(UserError, match="val_tokens"):
    evalset.draw(chunks_NxL, EOD, len(chunks_NxL) + 1, seed=3)


def test_round_robin_is_the_order_main_drew_before_the_tune_split():
  doc_N = np.repeat(np.arange(30), np.arange(1, 31))
  # ids from evalset.round_robin at main 43e0a1c (before eval.set existed): the default set is unchanged
  want = [5, 10, 17, 27, 33, 40, 50, 56, 72, 87, 102, 128, 147, 158, 182, 215, 249, 255, 292, 310, 333,
          377, 411, 453]
  assert evalset.round_robin(doc_N, 24, seed=5).tolist() == want
  chunks_NxL = _stream(list(range(20, 50)), seq_len=8)
  doc_N = evalset.chunk_documents(chunks_NxL, EOD)
  n_val_docs = np.unique(doc_N).size - evalset.tune_documents(doc_N, 5).size
  np.testing.assert_array_equal(evalset.draw(chunks_NxL, EOD, n_val_docs, seed=5).chunk_ids_N,
                                evalset.round_robin(doc_N, n_val_docs, seed=5))
  assert not np.array_equal(evalset.draw(chunks_NxL, EOD, n_val_docs + 1, seed=5).chunk_ids_N,
                            evalset.round_robin(doc_N, n_val_docs + 1, seed=5))  # would reach a tune document


@pytest.mark.parametrize("n", [3, 12, 40])
def test_tune_and_val_share_no_document_and_no_sequence(n):
  chunks_NxL = _stream([30 + 7 * i for i in range(40)], seq_len=16)
  val = evalset.draw(chunks_NxL, EOD, n, seed=2, which="val")
  tune = evalset.draw(chunks_NxL, EOD, n, seed=2, which="tune")
  assert len(val.chunk_ids_N) == len(tune.chunk_ids_N) == n
  assert np.intersect1d(val.document_N, tune.document_N).size == 0
  assert np.intersect1d(val.chunk_ids_N, tune.chunk_ids_N).size == 0
  tune_docs = evalset.tune_documents(evalset.chunk_documents(chunks_NxL, EOD), seed=2)
  assert tune_docs.size == int(40 * evalset.TUNE_FRACTION) and set(tune.document_N) <= set(tune_docs)
  assert tune.n_documents == min(n, tune_docs.size)  # round-robin within the tune documents too
  with pytest.raises(UserError, match="eval.set"):
    evalset.draw(chunks_NxL, EOD, n, seed=2, which="test")
  with pytest.raises(UserError, match="'tune' documents"):
    evalset.draw(chunks_NxL, EOD, len(chunks_NxL), seed=2, which="tune")


def test_a_single_validation_document_is_the_val_set_and_no_tune_set():
  chunks_NxL = _stream([200], seq_len=16)
  assert evalset.draw(chunks_NxL, EOD, 5, seed=0).n_documents == 1
  with pytest.raises(UserError, match="0 validation chunks of the 'tune' documents"):
    evalset.draw(chunks_NxL, EOD, 1, seed=0, which="tune")


def test_clustered_se_is_the_usual_se_for_singletons_and_larger_for_shared_offsets():
  rng = np.random.default_rng(0)
  x = rng.normal(size=50)
  assert evalset.clustered_se(x) == pytest.approx(np.std(x, ddof=1) / np.sqrt(50))
  assert np.isnan(evalset.clustered_se(x, np.zeros(50)))


def test_clustered_se_covers_the_truth_where_the_naive_se_does_not():
  """Per-document offsets (sd 1) and per-chunk noise (sd 0.3), 40 documents x 6 chunks."""
  rng = np.random.default_rng(1)
  truth, n_docs, per_doc, reps = 3.0, 40, 6, 2000
  doc_N = np.repeat(np.arange(n_docs), per_doc)
  hit_cl = hit_naive = 0
  for _ in range(reps):
    x = truth + rng.normal(0, 1.0, n_docs)[doc_N] + rng.normal(0, 0.3, doc_N.size)
    err = abs(x.mean() - truth)
    hit_cl += err <= 1.96 * evalset.clustered_se(x, doc_N)
    hit_naive += err <= 1.96 * evalset.clustered_se(x)
  assert 0.92 <= hit_cl / reps <= 0.97  # nominal 0.95 (40 clusters: slightly under)
  assert hit_naive / reps < 0.75  # treats 240 correlated chunks as independent


def test_prepared_eval_set_and_a_run_record_documents(tiny_corpus, data_cache, tmp_path):
  cfg = tiny_config(tiny_corpus, data_cache, "ar", epochs=2.0)
  prepared = pipeline.prepare(cfg.data)
  es = pipeline.eval_set(prepared, cfg.eval.num_sequences)
  first = evalset.chunk_documents(prepared.val_chunks, prepared.eod_id)[:cfg.eval.num_sequences]
  assert es.n_documents > np.unique(first).size  # the first N chunks are fewer documents
  summary = train.train_and_evaluate(cfg, tmp_path)
  assert summary["eval_documents"] == es.n_documents and summary["n_sequences"] == len(es.tokens_NxL)
  assert summary["eval_set"] == "val"
  counts = np.bincount(es.tokens_NxL.reshape(-1))
  p = counts[counts > 0] / es.tokens_NxL.size
  assert summary["val_unigram_entropy"] == pytest.approx(-(p * np.log(p)).sum())
  assert 0 < summary["val_unigram_entropy"] <= np.log(prepared.vocab_size)
  assert summary["flops_6nd"] == 6 * summary["params_non_embedding"] * summary["tokens_seen"]
  assert summary["flops"] < summary["flops_6nd"] * 10  # both recorded, counted keeps its own value
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  ev = [r for r in rows if r["split"] == "eval"]
  for r in ev:
    saved = evalset.load_losses(rundir.losses_path(tmp_path, r["step"]))
    np.testing.assert_array_equal(saved["chunk_N"], es.chunk_ids_N)
    np.testing.assert_array_equal(saved["document_N"], es.document_N)
    assert r["loss"] == pytest.approx(saved["loss_N"].mean(), rel=1e-12)
    assert r["loss_se"] == pytest.approx(evalset.clustered_se(saved["loss_N"], saved["document_N"]))
    assert r["eval_documents"] == es.n_documents and r["n_sequences"] == len(es.tokens_NxL)
  v = validation.summarise(saved["loss_N"], cfg.data.seq_len, saved["document_N"])
  assert v.loss_se >= 0 and v.loss_se_naive > 0


@pytest.mark.slow
def test_default_corpus_default_eval_set_spans_64_documents(tmp_path):
  from configs import base
  c = base.get_config()
  c.data.cache_dir = str(tmp_path)
  es = pipeline.eval_set(pipeline.prepare(c.data), c.eval.num_sequences)
  assert es.n_documents >= 64
  # 256 sequences over the 64 val documents (79 less 15 tune): 4 each, 5 where others have fewer
  assert np.bincount(es.document_N).max() <= 5
