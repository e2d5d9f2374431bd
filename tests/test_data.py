"""The data pipeline: U and E mean what they say, on tiny synthetic corpora (vocab 300, L = 32)."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import base
from dlmscale.data import chunks
from dlmscale.data import corpus as corpus_lib
from dlmscale.train import open_run as restore
from dlmscale.data import pipeline
from dlmscale.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
L = 32
WORDS = ("the of and to in is was for on that with as by at from his her it an are were be this which or "
         "python data model token epoch budget chunk mask loss").split()


def write_corpus(root: pathlib.Path, n_docs: int = 80, seed: int = 0) -> list[str]:
  """Unique documents (each starts with its own marker) of 30..300 random words, one per file."""
  r = random.Random(seed)
  root.mkdir(parents=True, exist_ok=True)
  docs = []
  for i in range(n_docs):
    words = [r.choice(WORDS) for _ in range(r.randint(30, 300))]
    doc = f"doc{i} " + " ".join(words) + "\n"
    (root / f"doc{i:03d}.txt").write_text(doc)
    docs.append(doc)
  return docs


def cfg(corpus, cache_dir, **overrides):
  c = base.get_config().data
  c.corpus, c.cache_dir, c.vocab_size, c.seq_len = str(corpus), str(cache_dir), 300, L
  c.val_fraction = 0.1
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("tiny")
  docs = write_corpus(root / "corpus")
  prepared = pipeline.prepare(cfg(root / "corpus", root / "cache"))
  return root, docs, prepared


def segments(prepared, chunks_NxL) -> list[str]:
  """The stored token stream cut at eod and decoded; the last (truncated) piece is dropped."""
  sp = pipeline.load_tokenizer(prepared)
  stream = np.asarray(chunks_NxL).reshape(-1).tolist()
  out, cur = [], []
  for t in stream:
    if t == prepared.eod_id:
      out.append(sp.decode(cur))
      cur = []
    else:
      cur.append(t)
  return out


def chunk_index(prepared) -> dict[bytes, int]:
  rows = {row.tobytes(): i for i, row in enumerate(np.asarray(prepared.train_chunks, dtype=np.int32))}
  assert len(rows) == len(prepared.train_chunks), "test corpus must have distinct chunks"
  return rows


def batch_ids(batch, index) -> list[int]:
  return [index[row.tobytes()] for row in batch["tokens"]]


# --- preparing -----------------------------------------------------------------------------------


def test_manifest_vocabulary_and_store(tiny):
  _, docs, p = tiny
  m = p.manifest
  sp = pipeline.load_tokenizer(p)
  assert (p.vocab_size, p.mask_id, p.seq_len) == (300, 299, L)
  assert sp.get_piece_size() == p.vocab_size - 1 and p.eod_id == sp.eos_id()
  assert p.train_chunks.dtype == np.uint16 and p.train_chunks.shape == (m["splits"]["train"]["chunks"], L)
  assert p.val_chunks.shape == (m["splits"]["val"]["chunks"], L)
  assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == len(docs) == m["documents"]
  assert m["splits"]["val"]["documents"] == 8  # 10% of 80, whole documents
  for s in m["splits"].values():
    assert s["tokens"] == s["chunk_tokens"] + s["dropped_tokens"] and s["dropped_tokens"] < L
  assert p.tokenizer_sha256 == chunks.file_sha256(p.tokenizer_path)
  assert m["python_version"] and m["seed"] == 0 and m["inputs"]["vocab_size"] == 300
  assert int(np.asarray(p.train_chunks).max()) < p.mask_id  # the mask id never appears in data
  assert chunks.token_dtype(1 << 16) == np.uint16 and chunks.token_dtype((1 << 16) + 1) == np.uint32


def test_packing_round_trips_and_splits_share_no_document(tiny):
  _, docs, p = tiny
  train, val = segments(p, p.train_chunks), segments(p, p.val_chunks)
  assert not set(train) & set(val)
  assert set(train) <= set(docs) and set(val) <= set(docs)
  # Training documents are packed in corpus order: each one whole, then eod.
  assert train == [d for d in docs if d in set(train)]
  missing = set(docs) - set(train) - set(val)
  assert len(missing) <= 2  # only the tails cut off by the last partial chunk of each split
  assert len(val) >= p.manifest["splits"]["val"]["documents"] - 1


def test_tokenizer_is_trained_on_training_documents_only(tmp_path):
  # Each document is mostly its own made-up word, so BPE learns a piece for it only if it saw it.
  r = random.Random(1)
  (tmp_path / "c").mkdir()
  words = ["".join(r.choice("bcdfghjklmnpqrstvwxz") for _ in range(6)) for _ in range(20)]
  for i, w in enumerate(words):
    (tmp_path / "c" / f"{i:02d}.txt").write_text(" ".join([w] * 200) + "\n")
  p = pipeline.prepare(cfg(tmp_path / "c", tmp_path / "cache", vocab_size=420, val_fraction=0.2))
  sp = pipeline.load_tokenizer(p)
  val = set(segments(p, p.val_chunks))
  val_words = {w for w in words if any(w in d for d in val)}
  train_words = set(words) - val_words
  assert len(val_words) >= 3
  assert all(len(sp.encode(" " + w, out_type=str)) > 1 for w in val_words)
  assert sum(len(sp.encode(" " + w, out_type=str)) == 1 for w in train_words) >= len(train_words) - 1


def test_prepare_is_cached_by_its_inputs(tiny, tmp_path):
  root, _, p = tiny
  start = time.time()
  again = pipeline.prepare(cfg(root / "corpus", root / "cache"))
  assert again.root == p.root and again.manifest == p.manifest and time.time() - start < 2
  other = pipeline.prepare(cfg(root / "corpus", root / "cache", seq_len=16))
  assert other.root != p.root and other.seq_len == 16
  # Same file names, changed content: a different corpus, so different prepared data.
  changed = tmp_path / "corpus"
  write_corpus(changed, seed=5)
  moved = pipeline.prepare(cfg(changed, root / "cache"))
  assert moved.root != p.root
  assert moved.manifest["source"]["content_sha256"] != p.manifest["source"]["content_sha256"]


def test_out_dir_is_never_overwritten_by_other_inputs(tiny, tmp_path):
  root, _, p = tiny
  out = tmp_path / "prepared"
  first = pipeline.prepare(cfg(root / "corpus", root / "cache"), out_dir=out)
  assert first.root == out and (out / "train.bin").read_bytes() == pathlib.Path(p.root / "train.bin").read_bytes()
  before = (out / "manifest.json").read_text()
  with pytest.raises(UserError, match=r"different inputs.*vocab_size: 300 -> 320.*another --out_dir"):
    pipeline.prepare(cfg(root / "corpus", root / "cache", vocab_size=320), out_dir=out)
  assert (out / "manifest.json").read_text() == before
  assert pipeline.prepare(cfg(root / "corpus", root / "cache"), out_dir=out).manifest == first.manifest
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="not empty"):
    pipeline.prepare(cfg(root / "corpus", root / "cache"), out_dir=tmp_path / "junk")


def test_concurrent_prepares_wait_for_one_build(tiny, tmp_path):
  root, _, _ = tiny
  out = tmp_path / "shared"
  script = ("import json, sys\nfrom configs import base\nfrom dlmscale.data import pipeline\n"
            f"c = base.get_config().data\nc.corpus, c.vocab_size, c.seq_len = {str(root / 'corpus')!r}, 300, {L}\n"
            f"c.val_fraction = 0.1\nprint(json.dumps(pipeline.prepare(c, out_dir={str(out)!r}).manifest))\n")
  with chunks.locked(out):  # as if another run were building it right now
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)
    assert all(proc.poll() is None for proc in procs) and not out.exists()
  results = [proc.communicate(timeout=60) for proc in procs]
  assert all(proc.returncode == 0 for proc in procs), results
  manifests = [json.loads(stdout) for stdout, _ in results]
  assert manifests[0] == manifests[1]  # built once: the second found the first's data
  assert sorted(x.name for x in tmp_path.iterdir()) == [".shared.lock", "shared"]  # no temporary left


def test_given_tokenizer_reproduces_the_same_chunks(tiny, tmp_path):
  root, _, p = tiny
  given = pipeline.prepare(cfg(root / "corpus", tmp_path, tokenizer=str(p.tokenizer_path), vocab_size=0))
  assert given.vocab_size == 300 and given.tokenizer_sha256 == p.tokenizer_sha256
  assert given.manifest["splits"]["train"]["sha256"] == p.manifest["splits"]["train"]["sha256"]
  assert not given.manifest["tokenizer"]["trained"]
  with pytest.raises(UserError, match=r"299 pieces.*V=300.*vocab_size=512.*--vocab_size=300"):
    pipeline.prepare(cfg(root / "corpus", tmp_path, tokenizer=str(p.tokenizer_path), vocab_size=512))
  restore.check_tokenizer(p.sha256s(), p)  # the run's own record: no difference
  restore.check_tokenizer({**p.sha256s(), "val": "1" * 64}, p)  # inference may read other splits
  with pytest.raises(UserError, match="tokenizer differs"):
    restore.check_tokenizer({**p.sha256s(), "tokenizer": "0" * 64}, p)


def test_val_tokens_holds_out_at_least_that_many(tiny, tmp_path):
  root, docs, _ = tiny
  p = pipeline.prepare(cfg(root / "corpus", tmp_path, val_tokens=1000))
  val = p.manifest["splits"]["val"]
  assert val["chunk_tokens"] >= 1000 and val["chunks"] >= 1000 // L + 1
  # Just enough whole documents (in the split's seeded order): without the last one, too few.
  last = docs[corpus_lib.doc_permutation(len(docs), 0)[val["documents"] - 1]]
  assert val["tokens"] - (len(pipeline.load_tokenizer(p).encode(last)) + 1) < 1024 <= val["tokens"]
  assert not set(segments(p, p.train_chunks)) & set(segments(p, p.val_chunks))
  with pytest.raises(UserError, match="more than the corpus can hold out"):
    pipeline.prepare(cfg(root / "corpus", tmp_path, val_tokens=10**7))


def test_vocab_size_infeasible_for_corpus(tiny, tmp_path):
  root, _, _ = tiny
  with pytest.raises(UserError, match=r"too large for this training split.*vocab_size <= \d+"):
    pipeline.prepare(cfg(root / "corpus", tmp_path, vocab_size=5000))
  with pytest.raises(UserError, match="too small"):
    pipeline.prepare(cfg(root / "corpus", tmp_path, vocab_size=200))


def test_sources_jsonl_parquet_and_separator(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  texts = [f"document {i} " + "words " * i for i in range(1, 6)]
  (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
  pq.write_table(pa.table({"id": list(range(5)), "body": texts}), tmp_path / "a.parquet")
  (tmp_path / "a.txt").write_text("\n\n".join(texts))
  for name in ("a.jsonl", "a.parquet"):
    assert list(corpus_lib.open_corpus(str(tmp_path / name), text_field="body").iter_docs()) == texts
    with pytest.raises(UserError, match=r"no field 'text'; fields present: id, body"):
      list(corpus_lib.open_corpus(str(tmp_path / name), text_field="text").iter_docs())
  split = corpus_lib.open_corpus(str(tmp_path / "a.txt"), doc_separator="\\n\\n")  # as typed on a command line
  assert list(split.iter_docs()) == texts
  assert list(corpus_lib.open_corpus(str(tmp_path / "a.txt")).iter_docs()) == ["\n\n".join(texts)]
  both = corpus_lib.open_corpus(str(tmp_path / "a.*"), text_field="body", doc_separator="\n\n")
  assert len(list(both.iter_docs())) == 15
  with pytest.raises(UserError, match="does not exist"):
    corpus_lib.open_corpus(str(tmp_path / "nope.txt"))
  with pytest.raises(UserError, match="no files match"):
    corpus_lib.open_corpus(str(tmp_path / "*.csv"))


def test_tokenizer_sentence_sample_is_seeded_and_uniform():
  from dlmscale.data import tokenizer as tok  # pylint: disable=g-import-not-at-top
  items = [str(i) for i in range(10_000)]
  a, b = tok.sample_sentences(iter(items), 500, seed=3), tok.sample_sentences(iter(items), 500, seed=3)
  assert a == b and len(set(a)) == 500 and a == sorted(a, key=int)  # kept in corpus order
  assert a != tok.sample_sentences(iter(items), 500, seed=4)
  assert 3_000 < np.mean([int(x) for x in a]) < 7_000  # drawn from the whole stream, not its head
  assert tok.sample_sentences(iter(items[:10]), 500, seed=3) == items[:10]


def test_stdlib_corpus_files():
  files = corpus_lib.stdlib_files()
  assert len(files) > 500 and all(f.suffix == ".py" for f in files)
  assert not any("site-packages" in f.parts for f in files)
  assert any(f.name == "os.py" for f in files)


# --- budgets -------------------------------------------------------------------------------------


def test_steps_for_budget_is_exact():
  assert pipeline.steps_for_budget(100, 0.29, 1, 1) == 29  # float arithmetic would give 28
  assert pipeline.steps_for_budget(2048, 1.5, 8, 32) == 12
  with pytest.raises(UserError, match="smaller than one batch"):
    pipeline.steps_for_budget(255, 10, 8, 32)
  with pytest.raises(UserError, match="less than one batch"):
    pipeline.steps_for_budget(512, 0.4, 8, 32)
  with pytest.raises(UserError, match="must be positive"):
    pipeline.steps_for_budget(512, 0, 8, 32)


def test_budgets_are_nested_and_bounded():
  small, big = pipeline.budget_chunk_ids(1000, 3200, 32, 7), pipeline.budget_chunk_ids(1000, 16001, 32, 7)
  assert len(small) == 100 and len(big) == 501 and len(set(big)) == 501
  np.testing.assert_array_equal(big[:100], small)
  assert not np.array_equal(pipeline.budget_chunk_ids(1000, 3200, 32, 8), small)
  with pytest.raises(UserError, match=r"larger than the training split, which has 32,000 tokens"):
    pipeline.budget_chunk_ids(1000, 32001, 32, 7)


# --- the training pipeline -----------------------------------------------------------------------


def test_every_budget_chunk_seen_exactly_e_times_in_new_orders(tiny):
  _, _, p = tiny
  index = chunk_index(p)
  subset = pipeline.budget_chunk_ids(len(p.train_chunks), 64 * L, L, p.manifest["seed"])
  it = pipeline.train_iterator(p, unique_tokens=64 * L, epochs=3, global_batch=8, seed=0)
  batches = list(it)
  assert len(batches) == pipeline.steps_for_budget(64 * L, 3, 8, L) == 24
  assert all(b["tokens"].dtype == np.int32 and b["tokens"].shape == (8, L) for b in batches)
  seen = [i for b in batches for i in batch_ids(b, index)]
  assert collections.Counter(seen) == {int(i): 3 for i in subset}
  epochs = [seen[k * 64:(k + 1) * 64] for k in range(3)]
  assert all(sorted(e) == sorted(subset.tolist()) for e in epochs)
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
  assert [b["epoch"] for b in batches][7::8] == [1.0, 2.0, 3.0]
  # grain reseeds epoch e with seed + e: seed 1's first epoch must still not be seed 0's second.
  seed1 = [i for b in pipeline.train_iterator(p, unique_tokens=64 * L, epochs=1, global_batch=8, seed=1)
           for i in batch_ids(b, index)]
  assert seed1 != epochs[1] and sorted(seed1) == sorted(epochs[1])


def test_fractional_epochs_truncate_to_the_budget(tiny):
  _, _, p = tiny
  index = chunk_index(p)
  subset = set(pipeline.budget_chunk_ids(len(p.train_chunks), 64 * L, L, p.manifest["seed"]).tolist())
  seen = [i for b in pipeline.train_iterator(p, unique_tokens=64 * L, epochs=1.5, global_batch=8, seed=3)
          for i in batch_ids(b, index)]
  assert len(seen) == 96
  assert set(seen[:64]) == subset and len(set(seen[64:])) == 32 and set(seen[64:]) <= subset


def test_restoring_state_mid_epoch_continues_identically(tiny):
  _, _, p = tiny
  kw = dict(unique_tokens=64 * L, epochs=2, global_batch=8, seed=11)
  it = pipeline.train_iterator(p, **kw)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  rest = list(it)
  resumed = pipeline.train_iterator(p, **kw)
  resumed.set_state(state)
  again = list(resumed)
  assert len(again) == len(rest) == 11
  for a, b in zip(rest, again):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert a["epoch"] == b["epoch"]
  other = next(pipeline.train_iterator(p, **{**kw, "seed": 12}))
  assert not np.array_equal(other["tokens"], next(pipeline.train_iterator(p, **kw))["tokens"])


def test_host_slices_partition_the_global_batch(tiny):
  _, _, p = tiny
  index = chunk_index(p)
  kw = dict(unique_tokens=64 * L, epochs=1, global_batch=8, seed=4)
  whole = list(pipeline.train_iterator(p, **kw))
  hosts = [list(pipeline.train_iterator(p, **kw, process_index=i, process_count=2)) for i in range(2)]
  for g, h0, h1 in zip(whole, *hosts):
    assert h0["tokens"].shape == (4, L)
    assert not set(batch_ids(h0, index)) & set(batch_ids(h1, index))
    np.testing.assert_array_equal(np.concatenate([h0["tokens"], h1["tokens"]]), g["tokens"])
  with pytest.raises(UserError, match="divisible"):
    pipeline.train_iterator(p, **{**kw, "global_batch": 9}, process_count=2)


def test_budget_errors_from_the_iterator(tiny):
  _, _, p = tiny
  n_tokens = len(p.train_chunks) * L
  with pytest.raises(UserError, match=f"training split, which has {n_tokens:,} tokens"):
    pipeline.train_iterator(p, unique_tokens=n_tokens + 1, epochs=1, global_batch=8, seed=0)
  with pytest.raises(UserError, match="smaller than one batch"):
    pipeline.train_iterator(p, unique_tokens=100, epochs=4, global_batch=8, seed=0)


def test_eval_set(tiny):
  _, _, p = tiny
  es = pipeline.eval_set(p, 5)
  v = es.tokens_NxL
  assert v.dtype == np.int32 and v.shape == (5, L)
  np.testing.assert_array_equal(v, p.val_chunks[es.chunk_ids_N])
  np.testing.assert_array_equal(es.chunk_ids_N, pipeline.eval_set(p, 5).chunk_ids_N)  # fixed by the data
  assert es.n_documents == 5  # one chunk from each of five documents
  with pytest.raises(UserError, match="val_tokens"):
    pipeline.eval_set(p, len(p.val_chunks) + 1)


@pytest.mark.slow
def test_default_corpus_prepares_within_a_minute(tmp_path):
  start = time.process_time()  # CPU time (all threads): a shared, loaded machine cannot inflate it
  p = pipeline.prepare(cfg(corpus_lib.STDLIB, tmp_path, vocab_size=2048, seq_len=256, val_fraction=0.05))
  assert time.process_time() - start < 60
  assert p.manifest["source"]["python_version"] and p.manifest["splits"]["train"]["tokens"] > 5_000_000
  sp = pipeline.load_tokenizer(p)
  text = (pathlib.Path(os.__file__)).read_text()
  assert sp.decode(sp.encode(text)) == text
