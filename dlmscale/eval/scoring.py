"""A model's numbers on the validation set and on multiple-choice items, for any holder of params.

The evaluator scores a restored run and the trainer scores its live state with these same
functions, so a number in eval.json and the row the trainer logged for that checkpoint agree.
`run` is anything with the fields of `Scored`: a restored run (train/open_run.py) or the trainer's
view of its state.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import jax
import ml_collections

from dlmscale.data import pipeline
from dlmscale.errors import UserError
from dlmscale.eval import choices, val_loss
from dlmscale.objectives.mdm import ElboSettings
from dlmscale.runtime import sharding


class Scored(Protocol):
  """What scoring reads of a run."""
  config: ml_collections.ConfigDict
  data: pipeline.RunData
  setup: Any  # train/steps.Setup: the compiled program
  params: Any


def scoring_method(objective: str, mc_method: str) -> str:
  """"" picks the family's default: exact log-probability for AR, the conditional ELBO for MDM."""
  if mc_method not in ("", "elbo", "chain"):
    raise UserError(f"--mc_method={mc_method!r}: choose elbo or chain (diffusion runs only)")
  if objective == "ar":
    if mc_method:
      raise UserError(f"--mc_method={mc_method} is for diffusion runs; AR runs are scored exactly")
    return "ar"
  return mc_method or "elbo"


def validation(run: Scored, batch_size: int, num_sequences: int) -> val_loss.Validation:
  """The training-time validation number (same chunks, same eval fn) for a restored run."""
  sharding.check_batch(batch_size, run.setup.mesh, "--batch_size")
  es = pipeline.eval_set(run.data.prepared, num_sequences, run.config.eval.get("set", "val"))
  with jax.set_mesh(run.setup.mesh):
    batches = val_loss.place(es.tokens_NxL, batch_size, run.setup.put_batches)
    per_seq_N = val_loss.per_sequence_losses(run.setup.eval_all, run.params, batches)
  return val_loss.summarise(per_seq_N, run.data.prepared.seq_len, es.document_N)


def score_task(run: Scored, items: Sequence[choices.McItem], method: str, batch_size: int,
               elbo: ElboSettings) -> choices.McResult:
  """Multiple-choice accuracy of `items` under the run's model."""
  prepared = run.data.prepared
  with jax.set_mesh(run.setup.mesh):
    scores = choices.score_items(
        run.params, run.setup.apply_fn, items, method=method, max_len=run.setup.model_cfg.max_len,
        pad_id=prepared.eod_id, mask_id=prepared.mask_id, batch_size=batch_size, elbo=elbo,
        put=run.setup.put_batches)
  return choices.accuracy(items, scores)
