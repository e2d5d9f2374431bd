"""Building one prepared-data directory: document split, tokenizer, packed chunks, manifest.

Called by `data.prepare` inside the build lock, writing into a temporary directory that is renamed
into place only when everything succeeded. The corpus was read once into a spill (spill.py); the
passes here (tokenizer training, encoding, validation candidates) stream that spill in corpus order,
and only the validation documents are held in memory.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import math
import pathlib
import platform
import shutil
import time
from typing import Callable

import numpy as np
import sentencepiece as spm

from dlmscale.data import chunks
from dlmscale.data import corpus as corpus_lib
from dlmscale.data import spill as spill_lib
from dlmscale.data import tokenizer as tok
from dlmscale.data.config import DataConfig
from dlmscale.errors import UserError

_ENCODE_BATCH_CHARS = 8 << 20  # documents handed to sentencepiece's threads at once
_CHARS_PER_TOKEN_GUESS = 5.0  # first guess when holding out a token count (corrected by measuring)


def inputs_of(cfg: DataConfig, corpus: corpus_lib.Corpus, content_sha256: str | None, vocab_size: int,
              given: pathlib.Path | None, version: int) -> dict:
  """Everything that determines the prepared bytes: their cache key hashes it, the manifest records it."""
  return {
      "version": version,
      "corpus": corpus.fingerprint(content_sha256),
      "formats": sorted(set(corpus.formats)),  # as resolved: --format=auto and =text on .txt files agree
      "text_field": cfg.text_field if set(corpus.formats) - {"text"} else "",  # only where it is read
      "doc_separator": corpus.doc_separator if "text" in corpus.formats else "",
      "val_fraction": 0.0 if cfg.val_tokens else cfg.val_fraction,
      "val_tokens": cfg.val_tokens,
      "vocab_size": vocab_size,
      "seq_len": cfg.seq_len,
      "seed": cfg.seed,
      "tokenizer_sha256": chunks.file_sha256(given) if given else "",
  }


def build(tmp: pathlib.Path, corpus: corpus_lib.Corpus, docs: spill_lib.Spill, cfg: DataConfig, inputs: dict,
          key: str, given: pathlib.Path | None) -> None:
  """Writes the tokenizer (tokenizer.model or .json), train.bin, val.bin and manifest.json into `tmp`
  from `docs`, the corpus's documents as its one read gave them."""
  start = time.time()
  doc_chars = docs.doc_chars
  vocab_size, seq_len, workers = inputs["vocab_size"], cfg.seq_len, cfg.num_workers
  perm = corpus_lib.doc_permutation(doc_chars.size, cfg.seed)
  tok_path = tmp / (tok.file_name(tok.load(given)) if given else chunks.TOKENIZER)
  if given:
    shutil.copyfile(given, tok_path)
  n_val, val_tokens = _split(docs, perm, doc_chars, cfg, vocab_size, tok_path, trained=not given)
  sp = tok.load(tok_path)
  dtype = chunks.token_dtype(vocab_size)
  is_val = np.zeros(doc_chars.size, bool)
  is_val[perm[:n_val]] = True

  # Training documents in corpus order; validation documents in the split's seeded order, so the
  # first validation chunks (the evaluation set) are a random sample of documents.
  train = chunks.PackWriter(tmp / "train.bin", dtype, sp.eos_id())
  val_docs, batch, size = {}, [], 0
  with _Encoder(sp, workers, train.add) as encoder:  # encodes one batch while the next is read
    for i, doc in enumerate(docs.iter_docs()):
      if is_val[i]:
        if val_tokens is None:
          val_docs[i] = doc
        continue
      batch.append(doc)
      size += len(doc)
      if size >= _ENCODE_BATCH_CHARS:
        encoder.submit(batch)
        batch, size = [], 0
    encoder.submit(batch)
  if val_tokens is None:
    val_tokens = tok.encode(sp, [val_docs[i] for i in perm[:n_val].tolist()], workers)
  val = chunks.PackWriter(tmp / "val.bin", dtype, sp.eos_id())
  val.add(val_tokens)
  splits = {"train": train.finish(seq_len), "val": val.finish(seq_len)}
  if splits["train"]["chunks"] == 0:
    raise UserError(f"the training split has {splits['train']['tokens']} tokens, less than one chunk of "
                    f"seq_len={seq_len}; use a bigger corpus or a smaller seq_len")
  if n_val and splits["val"]["chunks"] == 0:
    raise UserError(f"the validation split has {splits['val']['tokens']} tokens, less than one chunk of "
                    f"seq_len={seq_len}; raise val_fraction or set val_tokens >= {seq_len}")
  chunks.write_manifest(tmp, {
      "inputs": inputs, "key": key,
      "source": {"corpus": corpus.spec, "format": cfg.format, "text_field": cfg.text_field,
                 "doc_separator": corpus.doc_separator, **inputs["corpus"]},
      "python_version": platform.python_version(), "sentencepiece_version": spm.__version__,
      "seed": cfg.seed, "vocab_size": vocab_size, "mask_id": vocab_size - 1, "eod_id": sp.eos_id(),
      "seq_len": seq_len, "dtype": dtype.name,
      "tokenizer": {"file": tok_path.name, "sha256": chunks.file_sha256(tok_path), "pieces": sp.get_piece_size(),
                    "trained": not given, "source": str(given) if given else "trained on the training split",
                    "kind": "tokenizer.json" if tok_path.suffix == ".json" else "sentencepiece"},
      "vocab_padding": tok.padding(sp),  # ids of vocab_size that no token uses (a multiple-of-128 shape)
      "documents": int(doc_chars.size), "splits": splits,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "prepare_seconds": round(time.time() - start, 2),
  })


class _Encoder:
  """Encodes batches on one background thread (the tokenizers release the GIL while they work) and
  hands each batch's tokens to `sink` in submission order, so reading overlaps tokenizing."""

  def __init__(self, sp, workers: int, sink: Callable[[list[list[int]]], None]):
    self._sp, self._workers, self._sink = sp, workers, sink
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="encode")
    self._pending: concurrent.futures.Future | None = None

  def submit(self, batch: list[str]) -> None:
    future = self._pool.submit(tok.encode, self._sp, batch, self._workers)
    self._drain()
    self._pending = future

  def _drain(self) -> None:
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self._sink(pending.result())

  def __enter__(self) -> "_Encoder":
    return self

  def __exit__(self, exc_type, *_) -> None:
    try:
      if exc_type is None:
        self._drain()
    finally:
      self._pool.shutdown(wait=True, cancel_futures=True)


def _split(docs: spill_lib.Spill, perm: np.ndarray, doc_chars: np.ndarray, cfg: DataConfig, vocab_size: int,
           tok_path: pathlib.Path, trained: bool) -> tuple[int, list[list[int]] | None]:
  """How many of `perm`'s first documents are validation (and their tokens, when already encoded).

  Trains the tokenizer (when `trained`) without them. A token-count target is met by encoding
  candidate documents, which needs a tokenizer that never saw them: guess the candidates from
  characters, measure, and on a miss retrain with more candidates (rare).
  """
  n = doc_chars.size
  if not cfg.val_tokens:
    n_val = corpus_lib.val_doc_count(n, cfg.val_fraction)
    if trained:
      _train_tokenizer(docs, perm[:n_val], cfg, vocab_size, tok_path)
    return n_val, None
  if n < 2:
    raise UserError(f"the corpus has only {n} document: nothing is left for validation; add documents "
                    "or split files into documents with --doc_separator")
  seq_len = cfg.seq_len
  target = math.ceil(cfg.val_tokens / seq_len) * seq_len  # whole chunks holding at least val_tokens
  chars_per_token, m = _CHARS_PER_TOKEN_GUESS, 0
  cum_chars = np.cumsum(doc_chars[perm])
  while True:
    want = int(np.searchsorted(cum_chars, target * chars_per_token)) + 1
    m = min(n - 1, max(want, 2 * m, 1))
    if trained:
      _train_tokenizer(docs, perm[:m], cfg, vocab_size, tok_path)
    encoded = tok.encode(tok.load(tok_path), _docs_at(docs, perm[:m]), cfg.num_workers)
    cum = np.cumsum([len(t) + 1 for t in encoded])
    if cum[-1] >= target:
      n_val = int(np.searchsorted(cum, target)) + 1
      return n_val, encoded[:n_val]
    if m >= n - 1:
      raise UserError(f"val_tokens={cfg.val_tokens} is more than the corpus can hold out: all but one of its "
                      f"{n} documents give {int(cum[-1])} tokens; lower val_tokens")
    chars_per_token = 1.25 * cum_chars[m - 1] / cum[-1]


def _docs_at(docs: spill_lib.Spill, order: np.ndarray) -> list[str]:
  wanted = set(order.tolist())
  found = {i: d for i, d in enumerate(docs.iter_docs()) if i in wanted}
  return [found[i] for i in order.tolist()]


def _train_tokenizer(docs: spill_lib.Spill, held_out: np.ndarray, cfg: DataConfig, vocab_size: int,
                     path: pathlib.Path) -> None:
  """Trains on every document except the held-out ones (the validation split or its candidates)."""
  skip = set(held_out.tolist())
  kept = (d for i, d in enumerate(docs.iter_docs()) if i not in skip)
  tok.train(tok.training_sentences(kept), vocab_size - 1, path, seed=cfg.seed, workers=cfg.num_workers)
