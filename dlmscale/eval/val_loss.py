"""Validation loss with a standard error, identical for any batch size or device count.

Each sequence's value depends only on its own tokens and its global index (which seeds the
diffusion time samples), so how sequences are grouped into batches cannot change the number.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from dlmscale.data import evalset


@dataclasses.dataclass(frozen=True)
class Validation:
  loss: float  # nats per token: AR exact NLL, diffusion ELBO (an upper bound on the NLL)
  loss_se: float  # standard error clustered by document (evalset.clustered_se)
  loss_se_naive: float  # the same treating every sequence as independent (too small)
  n_sequences: int
  n_tokens: int
  eval_documents: int  # distinct validation documents among the sequences


def per_sequence_losses(eval_step: Callable, params, val_NxL: np.ndarray, batch_size: int,
                        put: Callable[[np.ndarray], jax.Array]) -> np.ndarray:
  """Runs `eval_step` over all sequences in fixed-size batches; the last one is padded and cropped.

  Every batch is dispatched before any result is fetched, and the results come back in one
  transfer: the accelerator runs the batches back to back instead of waiting on the host after
  each (on a small model, each round trip costs more than the batch).
  """
  n = len(val_NxL)
  out_N = np.empty(n, np.float64)
  starts = range(0, n, batch_size)
  ids = [np.arange(start, start + batch_size) for start in starts]
  nll = [eval_step(params, put(np.asarray(val_NxL[np.minimum(ids_B, n - 1)], np.int32)),  # pad: last row
                   put(ids_B.astype(np.int32))) for ids_B in ids]
  for ids_B, nll_B in zip(ids, jax.device_get(nll)):
    keep = ids_B < n
    out_N[ids_B[keep]] = np.asarray(nll_B)[keep]
  return out_N


def summarise(per_seq_N: np.ndarray, seq_len: int, document_N: np.ndarray | None = None) -> Validation:
  """Mean loss with its document-clustered SE (document_N None: every sequence its own document)."""
  n = len(per_seq_N)
  docs = np.arange(n) if document_N is None else np.asarray(document_N)
  return Validation(loss=float(np.mean(per_seq_N)), loss_se=evalset.clustered_se(per_seq_N, docs),
                    loss_se_naive=evalset.clustered_se(per_seq_N), n_sequences=n, n_tokens=n * seq_len,
                    eval_documents=int(np.unique(docs).size))
