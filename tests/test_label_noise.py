"""data.label_noise: an exact, seeded fraction of training tokens, uniform over the real ids, the same
every epoch and in every batch layout, never the mask id, never validation or the files on disk."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import tiny_config
from dlmscale import run_dir as rundir
from dlmscale.train import config_checks as run_config
from dlmscale.train import loop as train
from dlmscale.data import label_noise, pipeline
from dlmscale.errors import UserError

V, MASK = 16, 15


def _noise(fraction=0.25, seed=0):
  return label_noise.Corruption(fraction=fraction, seed=seed, vocab_size=V, mask_id=MASK)


def test_exactly_the_fraction_is_drawn_and_never_the_mask_id():
  ids = np.arange(200)
  all_mask = np.full((200, 64), MASK, np.int32)  # no draw can equal the mask id: every draw shows
  out = _noise(0.25)(all_mask, ids)
  assert ((out != MASK).sum(axis=1) == 16).all()  # round(0.25 * 64) per chunk, exactly
  drawn = out[out != MASK]
  counts = np.bincount(drawn, minlength=V)
  assert counts[MASK] == 0 and (counts[:MASK] > 0).all()
  expected = drawn.size / (V - 1)  # uniform over the 15 real ids: 3200 draws, ~213 each
  assert np.all(np.abs(counts[:MASK] - expected) < 5 * np.sqrt(expected))
  positions = np.nonzero(out != MASK)[1]
  assert len(set(positions.tolist())) > 60  # positions vary across chunks


def test_corruption_depends_on_the_chunk_not_the_batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, MASK, (8, 32)).astype(np.int32)
  ids = np.array([5, 900, 17, 3, 44, 2, 1000, 8])
  noise = _noise(0.5)
  together = noise(tokens, ids)
  alone = np.stack([noise(tokens[i:i + 1], ids[i:i + 1])[0] for i in range(8)])
  np.testing.assert_array_equal(together, alone)
  np.testing.assert_array_equal(noise(tokens[::-1], ids[::-1]), together[::-1])
  np.testing.assert_array_equal(noise(tokens, ids), together)  # the same draw every time (epoch)
  assert not np.array_equal(_noise(0.5, seed=1)(tokens, ids), together)
  np.testing.assert_array_equal(tokens, tokens.copy())  # the input is not modified in place
  assert _noise(0.001)(tokens, ids) is tokens  # round(0.001 * 32) = 0: nothing to corrupt


def _rows(it) -> list[list[tuple]]:
  epochs: dict[int, list[tuple]] = {}
  for b in it:
    epochs.setdefault(int(np.ceil(b["epoch"] - 1e-9)), []).extend(map(tuple, b["tokens"]))
  return [sorted(r) for _, r in sorted(epochs.items())]


def _digest(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_train_iterator_repeats_one_corrupted_dataset_and_leaves_the_data_alone(tiny_corpus, data_cache):
  cfg = tiny_config(tiny_corpus, data_cache)
  p = pipeline.prepare(cfg.data)
  before = (_digest(p.train_chunks), _digest(p.val_chunks))
  L = p.seq_len
  kw = dict(unique_tokens=16 * L, epochs=2, global_batch=8, seed=0)
  clean = _rows(pipeline.train_iterator(p, **kw))
  noisy = _rows(pipeline.train_iterator(p, **kw, label_noise=0.2))
  assert len(noisy) == 2 and noisy[0] == noisy[1]  # epoch 2 sees epoch 1's corruption again
  assert clean[0] == clean[1] and noisy[0] != clean[0]
  noisy_NxL, clean_NxL = _per_chunk(p, kw, 0.2), _per_chunk(p, kw, 0.0)  # aligned by chunk id
  changed = np.mean(noisy_NxL != clean_NxL)  # 20% drawn, of which 1/(V-1) redraw the same token
  assert abs(changed - 0.2 * (1 - 1 / (p.vocab_size - 1))) < 0.02
  assert (_digest(p.train_chunks), _digest(p.val_chunks)) == before  # nothing written back


def _per_chunk(p, kw, noise):
  """Budget chunks in chunk-id order, as one epoch of the iterator delivers them (clean or noisy)."""
  ids = pipeline.budget_chunk_ids(len(p.train_chunks), kw["unique_tokens"], p.seq_len, p.manifest["seed"])
  tokens = np.asarray(p.train_chunks[ids], np.int32)
  c = label_noise.from_config(noise, p.manifest["seed"], p.vocab_size, p.mask_id)
  out = c(tokens, ids) if c else tokens
  one_epoch = _rows(pipeline.train_iterator(p, **{**kw, "epochs": 1}, label_noise=noise))[0]
  assert sorted(map(tuple, out)) == one_epoch  # the iterator applies exactly this corruption
  return out


@pytest.mark.parametrize("value", [-0.1, 1.0, 3, "lots"])
def test_bad_fractions_are_refused_before_training(tiny_corpus, data_cache, value):
  with pytest.raises(UserError, match="label_noise"):
    label_noise.check_fraction(value)
  if isinstance(value, float):
    cfg = tiny_config(tiny_corpus, data_cache, **{"data.label_noise": value})
    with pytest.raises(UserError, match="label_noise"):
      run_config.validate(cfg)


@pytest.mark.slow
def test_a_noisy_run_fits_its_training_stream_worse_than_the_clean_run(tiny_corpus, data_cache, tmp_path):
  """The trainer feeds the corrupted stream: a uniform target costs ~ln(V - 1) nats where the clean
  stream's costs the clean loss, so 30% noise should add about 0.3 (ln(V - 1) - clean) to the train
  loss (more, as corrupted inputs also blur the context); we ask for at least half of that."""
  final = {}
  for name, noise in (("clean", 0.0), ("noisy", 0.3)):
    cfg = tiny_config(tiny_corpus, data_cache, epochs=6.0, **{"data.label_noise": noise})
    train.train_and_evaluate(cfg, tmp_path / name)
    rows = [r["loss"] for r in rundir.read_metrics(tmp_path / name) if r["split"] == "train"]
    final[name] = np.mean(rows[-3:])
  vocab = json.loads((tmp_path / "clean" / "summary.json").read_text())["vocab_size"]
  assert final["noisy"] - final["clean"] > 0.5 * 0.3 * (np.log(vocab - 1) - final["clean"])
  assert json.loads((tmp_path / "noisy" / "config.json").read_text())["data"]["label_noise"] == 0.3
