"""Data benchmark: preparing the default corpus, and the training pipeline's throughput.

  python bench/data_bench.py [--batch=32 --seq_len=256 --vocab_size=2048 --batches=4000]

Prints one JSON line per measurement, then a readable line. Targets on a 2-core CPU: the default
corpus prepared in under 60 s; the pipeline delivering at least 5M tokens/s.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from dlmscale.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


def _throughput(it, batches: int, name: str, batch: int, seq_len: int) -> dict:
  """Wall-clock and CPU-time rates (the CPU one is what a loaded, shared machine cannot distort)."""
  next(it)  # the first batch pays for building the pipeline
  wall, cpu, tokens = time.perf_counter(), time.process_time(), 0
  for _ in range(batches):
    tokens += next(it)["tokens"].size
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {"bench": name, "batch": batch, "seq_len": seq_len, "batches": batches,
          "batches_per_s": round(batches / wall, 1), "tokens_per_s": round(tokens / wall),
          "tokens_per_cpu_s": round(tokens / cpu)}


def _naive_iterator(prepared: pipeline.Prepared, batch: int):
  """The row-by-row baseline: grain batches chunk arrays one element at a time."""
  import grain  # pylint: disable=g-import-not-at-top
  chunks = prepared.train_chunks
  ds = grain.MapDataset.range(len(chunks)).shuffle(seed=0).repeat(100)
  ds = ds.map(lambda i: np.asarray(chunks[i], np.int32)).batch(batch).map(lambda t: {"tokens": t})
  return iter(ds.to_iter_dataset())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--vocab_size", type=int, default=2048)
  parser.add_argument("--batches", type=int, default=4000)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as cache:
    cfg = base.get_config().data
    cfg.cache_dir, cfg.vocab_size, cfg.seq_len = cache, args.vocab_size, args.seq_len
    start, cpu = time.perf_counter(), time.process_time()
    prepared = pipeline.prepare(cfg)
    prep_s, prep_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    pipeline.prepare(cfg)
    cached_s = time.perf_counter() - start
    m = prepared.manifest
    row = {"bench": "data_prepare", "corpus": m["source"]["corpus"], "python": m["python_version"],
           "seconds": round(prep_s, 2), "cpu_seconds": round(prep_cpu, 2), "cached_seconds": round(cached_s, 3),
           "documents": m["documents"],
           "train_tokens": m["splits"]["train"]["tokens"], "val_tokens": m["splits"]["val"]["tokens"],
           "vocab_size": prepared.vocab_size, "seq_len": prepared.seq_len}
    print(json.dumps(row), flush=True)

    n_tokens = len(prepared.train_chunks) * args.seq_len
    epochs = max(1, -(-(args.batches + 1) * args.batch * args.seq_len // n_tokens))
    it = pipeline.train_iterator(prepared, unique_tokens=n_tokens, epochs=epochs, global_batch=args.batch, seed=0)
    pipe = _throughput(it, args.batches, "data_pipeline", args.batch, args.seq_len)
    print(json.dumps(pipe), flush=True)
    naive = _throughput(_naive_iterator(prepared, args.batch), max(200, args.batches // 10),
                        "data_pipeline_naive", args.batch, args.seq_len)
    print(json.dumps(naive), flush=True)
    del prepared, it

  print(f"data: {row['corpus']} prepared in {row['seconds']:.1f} s (cached: {row['cached_seconds']:.2f} s; "
        f"{row['train_tokens'] / 1e6:.2f}M train tokens); pipeline {pipe['batches_per_s']:.0f} batches/s = "
        f"{pipe['tokens_per_s'] / 1e6:.1f}M tokens/s at {args.batch}x{args.seq_len} "
        f"({pipe['tokens_per_cpu_s'] / 1e6:.1f}M per CPU-second) "
        f"(row-by-row baseline {naive['tokens_per_s'] / 1e6:.1f}M tokens/s)")


if __name__ == "__main__":
  main()
