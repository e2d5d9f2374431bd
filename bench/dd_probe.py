"""Probe: does a CI-sized width sweep show a label-noise double-descent peak? (docs/doubledescent.md)

  python bench/dd_probe.py --tiny_corpus --widths=4+8+16+24+32+48+64+96 --chunks=16 --steps=600

Trains plain AR at each width (1 layer unless --layers, d_ff = 3 d, constant lr after 20 warmup
steps, no weight decay) on --chunks training chunks of 32 tokens for --steps steps of 8 sequences,
clean and with each --noises level of data.label_noise, and prints one JSON line per run: the
mean train loss of the last 10 steps and the validation loss (64 sequences) with its standard
error. --tiny_corpus uses the test suite's corpus (tests/conftest.py), so the numbers match what a
CI test could train; otherwise --corpus (default python-stdlib). Nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from dlmscale.train import steps as program  # pylint: disable=wrong-import-position
from dlmscale.runtime import sharding
from dlmscale.eval import val_loss as validation
from dlmscale.data import pipeline


def _config(corpus: str, cache: str, width: int, a: argparse.Namespace, noise: float):
  c = base.get_config()
  c.model_size = "custom"
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.d_ff = width, a.layers, max(1, width // 16), 3 * width
  c.data.corpus, c.data.cache_dir, c.data.vocab_size, c.data.seq_len, c.data.val_fraction = (
      corpus, cache, 384, 32, 0.15)
  c.data.label_noise = noise
  c.batch_size, c.unique_tokens, c.epochs = 8, a.chunks * 32, a.steps * 8 / a.chunks
  c.optim.lr, c.optim.schedule, c.optim.warmup_steps, c.optim.weight_decay = a.lr, "constant", 20, 0.0
  return c


def _one(c) -> dict:
  p = pipeline.prepare(c.data)
  mesh = sharding.make_mesh(c.mesh)
  total = pipeline.steps_for_budget(c.unique_tokens, c.epochs, c.batch_size, c.data.seq_len)
  setup = program.build(c, p.vocab_size, p.mask_id, total, mesh)
  it = pipeline.train_iterator(p, unique_tokens=c.unique_tokens, epochs=c.epochs, global_batch=c.batch_size,
                           seed=c.seed, label_noise=c.data.label_noise)
  val = pipeline.eval_set(p, 64).tokens_NxL
  with jax.set_mesh(mesh):
    state, tail = setup.init(), []
    for s in range(total):
      state, m = setup.train_step(state, program.put_batch(next(it)["tokens"], setup))
      if s >= total - 10:
        tail.append(float(m["loss"]))
    batches = validation.place(val, 16, setup.put_batches)
    v = validation.summarise(validation.per_sequence_losses(setup.eval_all, state.params, batches), c.data.seq_len)
  return {"train_loss": float(np.mean(tail)), "val_loss": v.loss, "val_loss_se": v.loss_se, "steps": total}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--widths", default="4+8+16+24+32+48+64+96")
  ap.add_argument("--noises", default="0+0.2")
  ap.add_argument("--layers", type=int, default=1)
  ap.add_argument("--chunks", type=int, default=16)
  ap.add_argument("--steps", type=int, default=600)
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--corpus", default="python-stdlib")
  ap.add_argument("--tiny_corpus", action="store_true")
  a = ap.parse_args()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="dd-probe-"))
  corpus = a.corpus
  if a.tiny_corpus:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_tiny_corpus  # pylint: disable=g-import-not-at-top
    corpus = write_tiny_corpus(tmp / "corpus")
  for noise in (float(x) for x in a.noises.split("+")):
    for width in (int(x) for x in a.widths.split("+")):
      t0 = time.perf_counter()
      row = {"bench": "dd_probe", "noise": noise, "width": width, "layers": a.layers,
             "unique_tokens": a.chunks * 32, **_one(_config(corpus, str(tmp / "cache"), width, a, noise))}
      row["wall_s"] = round(time.perf_counter() - t0, 1)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
