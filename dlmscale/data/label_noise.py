"""`data.label_noise`: a fixed fraction of each training chunk's tokens replaced by uniform draws.

Nakkiran et al. (2019) make double descent visible by corrupting a fixed share of training labels.
In a language model every token is a label, so the analogue corrupts tokens of the training stream:
in each training chunk exactly round(fraction * L) positions get a token drawn uniformly from the
V - 1 real ids (never the reserved <mask> id; a draw may equal the original token, as a uniform
label may equal the true one). Which positions and which tokens depend only on (data.seed, the
chunk's index in the training split, the position), through a counter-based hash, so:
- every epoch sees the same corrupted chunk (the noise is part of the dataset, not augmentation);
- a chunk is corrupted the same way in every budget U that contains it, for every training seed,
  batch size, host count and resume point;
- validation chunks never pass through here, so eval losses stay on clean text.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlmscale.errors import UserError

_SELECT_TAG, _VALUE_TAG = 11, 12
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def check_fraction(fraction: float) -> float:
  """The fraction as a float in [0, 1); a UserError naming the fix otherwise."""
  try:
    f = float(fraction)
  except (TypeError, ValueError):
    raise UserError(f"data.label_noise={fraction!r} is not a number; give a fraction in [0, 1)") from None
  if not 0.0 <= f < 1.0:
    raise UserError(f"data.label_noise={f} must be a fraction in [0, 1) (e.g. 0.1 corrupts 10% of "
                    "training tokens); 0 turns it off")
  return f


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: a bijective, well-mixed uint64 -> uint64 (wrapping arithmetic)."""
  x = x + _GOLDEN
  x = (x ^ (x >> np.uint64(30))) * _M1
  x = (x ^ (x >> np.uint64(27))) * _M2
  return x ^ (x >> np.uint64(31))


def _hash(seed: int, tag: int, chunk_ids_B: np.ndarray, length: int) -> np.ndarray:
  """uint64[B, L] hashes of (seed, tag, chunk id, position)."""
  key = _mix(np.uint64(seed) ^ (np.uint64(tag) << np.uint64(32)))
  per_chunk_B = _mix(key ^ np.asarray(chunk_ids_B, np.uint64))
  return _mix(per_chunk_B[:, None] ^ np.arange(length, dtype=np.uint64)[None, :])


@dataclasses.dataclass(frozen=True)
class Corruption:
  """Applies the noise to batches of training chunks (callable on (tokens, chunk ids))."""
  fraction: float
  seed: int
  vocab_size: int  # including the reserved mask id
  mask_id: int

  def count(self, length: int) -> int:
    return int(round(self.fraction * length))

  def __call__(self, tokens_BxL: np.ndarray, chunk_ids_B: np.ndarray) -> np.ndarray:
    B, L = tokens_BxL.shape
    k = self.count(L)
    if k == 0:
      return tokens_BxL
    with np.errstate(over="ignore"):
      select_BxL = _hash(self.seed, _SELECT_TAG, chunk_ids_B, L)
      value_BxL = _hash(self.seed, _VALUE_TAG, chunk_ids_B, L)
    pos_Bxk = np.argsort(select_BxL, axis=1, kind="stable")[:, :k]
    draw_BxL = (value_BxL % np.uint64(self.vocab_size - 1)).astype(np.int64)
    draw_BxL = draw_BxL + (draw_BxL >= self.mask_id)  # skip the mask id, stay uniform over the rest
    out = np.array(tokens_BxL, copy=True)
    rows = np.arange(B)[:, None]
    out[rows, pos_Bxk] = draw_BxL[rows, pos_Bxk].astype(out.dtype)
    return out


def from_config(fraction: float, data_seed: int, vocab_size: int, mask_id: int) -> Corruption | None:
  """The corruption a run's data.label_noise asks for, or None when it is off."""
  f = check_fraction(fraction)
  return Corruption(f, int(data_seed), int(vocab_size), int(mask_id)) if f > 0 else None
