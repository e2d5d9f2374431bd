"""Validation loss with a standard error, identical for any batch size or device count.

Each sequence's value depends only on its own tokens and its global index (which seeds the
diffusion time samples), so how sequences are grouped into batches cannot change the number.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

from dlmscale import objectives
from dlmscale.data import evalset


@dataclasses.dataclass(frozen=True)
class Validation:
  loss: float  # nats per token: AR exact NLL, diffusion ELBO (an upper bound on the NLL)
  loss_se: float  # standard error clustered by document (evalset.clustered_se)
  loss_se_naive: float  # the same treating every sequence as independent (too small)
  n_sequences: int
  n_tokens: int
  eval_documents: int  # distinct validation documents among the sequences


@dataclasses.dataclass(frozen=True)
class Batches:
  """An evaluation set as whole batches: [n_batches, B, L] tokens and their global sequence ids.

  The last batch is padded by repeating the last sequence; `n` says how many rows are real. Placed
  on the devices once (`place`), it serves every evaluation of a run without a host transfer.
  """
  tokens_NbxBxL: Any  # np.ndarray on the host, jax.Array once placed
  ids_NbxB: Any
  n: int


def padded_rows(n: int, batch_size: int) -> np.ndarray:
  """Row indices [n_batches, batch_size] covering rows 0..n-1 in order; the last batch is filled
  with row n - 1 again (padding: scored, then cropped)."""
  return np.minimum(np.arange(math.ceil(n / batch_size) * batch_size), n - 1).reshape(-1, batch_size)


def batched(val_NxL: np.ndarray, batch_size: int) -> Batches:
  """The host arrays of `val_NxL` cut into batches of `batch_size`, the last padded."""
  ids_NbxB = padded_rows(len(val_NxL), batch_size).astype(np.int32)
  return Batches(np.asarray(val_NxL, np.int32)[ids_NbxB], ids_NbxB, len(val_NxL))


def place(val_NxL: np.ndarray, batch_size: int, put: Callable[[np.ndarray], jax.Array]) -> Batches:
  """`batched`, then on the devices; `put` places a [n_batches, B, ...] array every host holds in
  full (steps.Setup.put_batches: the batch axis split as a training batch is)."""
  b = batched(val_NxL, batch_size)
  return Batches(put(b.tokens_NbxBxL), put(b.ids_NbxB), b.n)


def eval_all_fn(eval_fn: objectives.EvalFn, apply_fn: objectives.ApplyFn) -> Callable:
  """(params, tokens_NbxBxL, ids_NbxB) -> nll_NbxB: `eval_fn` on each batch in turn, in one program.

  One compiled evaluation covers the whole set (lax.map: the batches run back to back on the device,
  one batch's activations live at a time), so an evaluation is one dispatch and one fetch.
  """
  def eval_all(params, tokens_NbxBxL: jax.Array, ids_NbxB: jax.Array) -> jax.Array:
    return jax.lax.map(lambda batch: eval_fn(params, apply_fn, *batch), (tokens_NbxBxL, ids_NbxB))
  return eval_all


def per_sequence_losses(eval_all: Callable, params, batches: Batches) -> np.ndarray:
  """Per-sequence losses (float64, padding cropped) of `batches` under `eval_all` (eval_all_fn,
  jitted: steps.Setup.eval_all), fetched in one transfer."""
  nll_NbxB = jax.device_get(eval_all(params, batches.tokens_NbxBxL, batches.ids_NbxB))
  return np.asarray(nll_NbxB, np.float64).reshape(-1)[:batches.n]


def summarise(per_seq_N: np.ndarray, seq_len: int, document_N: np.ndarray | None = None) -> Validation:
  """Mean loss with its document-clustered SE (document_N None: every sequence its own document)."""
  n = len(per_seq_N)
  docs = np.arange(n) if document_N is None else np.asarray(document_N)
  return Validation(loss=float(np.mean(per_seq_N)), loss_se=evalset.clustered_se(per_seq_N, docs),
                    loss_se_naive=evalset.clustered_se(per_seq_N), n_sequences=n, n_tokens=n * seq_len,
                    eval_documents=int(np.unique(docs).size))
