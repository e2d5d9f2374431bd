"""The evaluation set: validation chunks spread over documents, drawn once per prepared dataset.

Neighbouring chunks of one file are not independent samples: the first N validation chunks are one
or two files, and a standard error over them says nothing about the split. So the eval set is drawn
round-robin over all validation documents (every document's first drawn chunk, then every
document's second, ...) in an order fixed by the data seed: the same set for every run and both
families, at most ceil(N / documents) chunks of any document that has that many.

Two disjoint sets come from this order (config.eval.set): "tune", the documents the seeded order
visits last (TUNE_FRACTION of them), for choosing hyperparameters such as the learning rate; and
"val", the round-robin over every other document, which the claims are scored on. Because the tune
documents are the last ones a round visits, "val" with N <= (documents - tune documents) is exactly
the set drawn before the split existed; larger N changed once (it used to reach the tune documents).

A chunk's document is the one holding its middle token. The chunk store does not record document
boundaries; they are read from the end-of-document marker that the packer writes after every
document (chunks.PackWriter), which the tokenizer never emits for text (sentencepiece control id).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from dlmscale.errors import UserError

_EVAL_SEED_TAG = 4  # SeedSequence([data.seed, tag]) orders documents and chunks for the eval set
SETS = ("val", "tune")
TUNE_FRACTION = 0.2  # of the validation documents (the CPU study holds out 20% of its corpus: 66 tune documents)


@dataclasses.dataclass(frozen=True)
class EvalSet:
  chunk_ids_N: np.ndarray  # int64, positions in the validation chunk store, ascending
  document_N: np.ndarray  # int64, the validation document (in packing order) of each chunk
  tokens_NxL: np.ndarray  # int32

  @property
  def n_documents(self) -> int:
    return int(np.unique(self.document_N).size)

  @property
  def unigram_entropy(self) -> float:
    """Entropy (nats/token) of the set's own unigram distribution: the loss of the best predictor
    that ignores context, fitted to these very tokens (the report's unigram floor)."""
    return unigram_entropy(self.tokens_NxL)


def unigram_entropy(tokens: np.ndarray) -> float:
  """-sum p log p over the token frequencies of `tokens` (nats); NaN when empty."""
  counts = np.bincount(np.asarray(tokens, np.int64).reshape(-1))
  counts = counts[counts > 0]
  if counts.size == 0:
    return float("nan")
  p = counts / counts.sum()
  return float(-np.sum(p * np.log(p)))


def chunk_documents(val_NxL: np.ndarray, eod_id: int) -> np.ndarray:
  """The document index of each chunk: how many end-of-document markers precede its middle token."""
  n, seq_len = val_NxL.shape
  if n == 0:
    return np.zeros(0, np.int64)
  eod_pos = np.flatnonzero(np.asarray(val_NxL).reshape(-1) == eod_id)
  middle_N = np.arange(n, dtype=np.int64) * seq_len + seq_len // 2
  return np.searchsorted(eod_pos, middle_N, side="left").astype(np.int64)


def _orders(document_N: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
  """(documents, each chunk's document as an index into them, each document's rank in a round, and
  the generator, which next orders chunks: one draw sequence, so the sets never drift apart)."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), _EVAL_SEED_TAG]))
  docs, doc_index_N = np.unique(document_N, return_inverse=True)
  doc_rank = rng.permutation(docs.size)  # the order documents are visited within a round
  return docs, doc_index_N, doc_rank, rng


def round_robin(document_N: np.ndarray, num_sequences: int, seed: int,
                keep_documents: np.ndarray | None = None) -> np.ndarray:
  """`num_sequences` chunk ids, taken one per document per round in a seeded order (ascending).

  `keep_documents` restricts the draw to those documents without changing the order among them.
  """
  n = document_N.size
  docs, doc_index_N, doc_rank, rng = _orders(document_N, seed)
  chunk_order = rng.permutation(n)  # the order a document's chunks are taken
  by_doc = chunk_order[np.argsort(doc_index_N[chunk_order], kind="stable")]
  starts = np.searchsorted(doc_index_N[by_doc], np.arange(docs.size))
  round_of = np.empty(n, np.int64)
  round_of[by_doc] = np.arange(n) - starts[doc_index_N[by_doc]]  # 0 for a document's first chunk
  order = np.lexsort((doc_rank[doc_index_N], round_of))
  if keep_documents is not None:
    order = order[np.isin(document_N[order], keep_documents)]
  return np.sort(order[:num_sequences])


def tune_documents(document_N: np.ndarray, seed: int) -> np.ndarray:
  """The documents held apart for tuning: the TUNE_FRACTION that each round visits last (sorted).

  None below two documents: a lone validation document stays the val set's."""
  docs, _, doc_rank, _ = _orders(document_N, seed)
  if docs.size < 2:
    return np.zeros(0, docs.dtype)
  n_tune = max(1, int(docs.size * TUNE_FRACTION))
  return np.sort(docs[doc_rank >= docs.size - n_tune])


def draw(val_NxL: np.ndarray, eod_id: int, num_sequences: int, seed: int, which: str = "val") -> EvalSet:
  """An eval set of a prepared dataset (a pure function of its validation chunks, seed and `which`)."""
  if which not in SETS:
    raise UserError(f"eval.set={which!r}: choose 'val' (the claims) or 'tune' (hyperparameter choice)")
  if num_sequences < 1:
    raise UserError(f"eval.num_sequences={num_sequences} must be positive")
  document_N = chunk_documents(val_NxL, eod_id)
  tune = tune_documents(document_N, seed)
  keep = tune if which == "tune" else np.setdiff1d(np.unique(document_N), tune)
  available = int(np.isin(document_N, keep).sum())
  if num_sequences > available:
    raise UserError(f"eval.num_sequences={num_sequences} exceeds the {available} validation chunks of the "
                    f"{which!r} documents; lower eval.num_sequences or hold out more with data.val_tokens "
                    "(a token count) or data.val_fraction")
  ids_N = round_robin(document_N, num_sequences, seed, keep)
  return EvalSet(chunk_ids_N=ids_N, document_N=document_N[ids_N],
                 tokens_NxL=np.asarray(val_NxL[ids_N], dtype=np.int32))


# --- errors that respect the grouping, and the per-sequence record ---------------------------------

def clustered_se(x_N: np.ndarray, group_N: np.ndarray | None = None) -> float:
  """Cluster-robust standard error of mean(x) with clusters `group_N` (CR1: G/(G-1) correction).

  Sequences of one document share its difficulty, so they are one sample, not several. With one
  sequence per group this is the usual std/sqrt(n); NaN with fewer than two groups.
  """
  x_N = np.asarray(x_N, dtype=np.float64)
  if group_N is None:
    group_N = np.arange(x_N.size)
  _, g_N = np.unique(np.asarray(group_N), return_inverse=True)
  n_groups = int(g_N.max()) + 1 if x_N.size else 0
  if n_groups < 2:
    return float("nan")
  sums_G = np.bincount(g_N, weights=x_N - x_N.mean(), minlength=n_groups)
  return float(np.sqrt(n_groups / (n_groups - 1) * np.sum(sums_G ** 2)) / x_N.size)


def save_losses(path: str | os.PathLike, loss_N: np.ndarray, es: EvalSet) -> None:
  """Writes the per-sequence losses of one evaluation with their chunk and document ids (atomic) at
  `path` (run_dir.losses_path names it in a run directory)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    np.savez(f, loss_N=np.asarray(loss_N, np.float64), document_N=es.document_N, chunk_N=es.chunk_ids_N)
  os.replace(tmp, path)


def load_losses(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{"loss_N", "document_N", "chunk_N"} of one saved evaluation."""
  with np.load(path) as z:
    return {k: np.asarray(z[k]) for k in ("loss_N", "document_N", "chunk_N")}
