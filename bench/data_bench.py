"""Data benchmark: preparing the default corpus, and the training pipeline's throughput; or preparing
a generated gzip JSONL corpus with a byte-level BPE tokenizer.json.

  python bench/data_bench.py [--batch=32 --seq_len=256 --vocab_size=2048 --batches=4000]
  python bench/data_bench.py --generated_tokens=100M [--workers=1+2 --seq_len=2048 --repeats=3]

Prints one JSON line per measurement, then a readable line. Targets on a 2-core CPU: the default
corpus prepared in under 60 s; the pipeline delivering at least 5M tokens/s. For the generated
corpus: at least 1M tokens/s end to end on 2 cores, peak RSS under 2 GB, 2 workers at least 1.7x one
worker (the `data_prepare_speedup` row: the ratio of tokens/s measured in this one invocation, on
the same generated corpus, worker counts interleaved over --repeats), and the data phase of a later
run start (prepare() finding its data) under 2 s.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
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


def _generate(root: pathlib.Path, tokens: int, vocab: int) -> tuple[pathlib.Path, pathlib.Path]:
  """A gzip JSONL corpus of about `tokens` tokens (documents cut from stdlib source, each a different
  slice) and a byte-level BPE tokenizer.json trained on its first documents."""
  import gzip  # pylint: disable=g-import-not-at-top
  import sysconfig  # pylint: disable=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  text = "".join(p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))[:120])
  rng = np.random.default_rng(0)
  corpus, sample, chars = root / "corpus.jsonl.gz", [], 0
  with gzip.open(corpus, "wt", compresslevel=1) as f:
    while chars < tokens * 3.3:  # ~3.3 characters per token for a small BPE on code
      n = int(rng.integers(500, 6000))
      start = int(rng.integers(0, len(text) - n))
      doc = text[start:start + n]
      f.write(json.dumps({"text": doc, "url": f"doc{chars}"}) + "\n")
      chars += n
      if len(sample) < 2000:
        sample.append(doc)
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(sample, trainers.BpeTrainer(
      vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  tk.save(str(root / "tokenizer.json"))
  return corpus, root / "tokenizer.json"


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from dlmscale.data import pipeline
cfg = json.loads({cfg!r})
start, cpu = time.perf_counter(), time.process_time()
p = pipeline.prepare(cfg)
prep_s = time.perf_counter() - start
start = time.perf_counter()
pipeline.prepare(cfg)
again_s = time.perf_counter() - start
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
own = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": prep_s, "run_start_seconds": again_s,
                   "cpu_seconds": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
                   "peak_rss_mb": max(own.ru_maxrss, kids.ru_maxrss) / 1024,
                   "tokens": p.manifest["splits"]["train"]["tokens"] + p.manifest["splits"]["val"]["tokens"]}}))
"""


def generated(args) -> None:
  """Prepares a generated corpus in a fresh process per worker count and repeat."""
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    start = time.perf_counter()
    corpus, tj = _generate(root, args.generated_tokens, args.bpe_vocab)
    print(f"generated {corpus.stat().st_size / 1e6:.0f} MB of gzip JSONL in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    rows: dict[int, list[dict]] = {w: [] for w in args.workers}
    for repeat in range(args.repeats):  # interleaved, so a change in the machine's load hits every count
      for workers in args.workers:
        row = _prepare_generated(repo, root / f"cache{workers}-{repeat}", corpus, tj, workers, args)
        rows[workers].append(row)
        print(json.dumps(row), flush=True)
    best = {w: max(r["tokens_per_s"] for r in rs) for w, rs in rows.items()}
    one = min(args.workers)
    for workers in args.workers:
      if workers != one:
        print(json.dumps({"bench": "data_prepare_speedup", "workers": f"{workers}/{one}", "repeats": args.repeats,
                          "ratio": round(best[workers] / best[one], 2)}), flush=True)


def _prepare_generated(repo: str, cache: pathlib.Path, corpus: pathlib.Path, tj: pathlib.Path, workers: int,
                       args) -> dict:
  """One preparation in a fresh process (its own CPU time and peak RSS) into an empty cache."""
  import subprocess  # pylint: disable=g-import-not-at-top
  cfg = {"corpus": str(corpus), "tokenizer": str(tj), "vocab_size": 0, "seq_len": args.seq_len,
         "num_workers": workers, "cache_dir": str(cache)}
  proc = subprocess.run([sys.executable, "-c", _CHILD.format(repo=repo, cfg=json.dumps(cfg))],
                        capture_output=True, text=True, check=True)
  m = json.loads(proc.stdout.strip().splitlines()[-1])
  shutil.rmtree(cache)  # repeats of a 100M-token corpus would otherwise fill the disk
  return {"bench": "data_prepare_generated", "format": "jsonl.gz", "tokenizer": f"byte-level BPE {args.bpe_vocab}",
          "workers": workers, "seq_len": args.seq_len, "tokens": m["tokens"], "seconds": round(m["seconds"], 1),
          "tokens_per_s": round(m["tokens"] / m["seconds"]), "cpu_seconds": round(m["cpu_seconds"], 1),
          "peak_rss_mb": round(m["peak_rss_mb"]), "run_start_data_seconds": round(m["run_start_seconds"], 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--vocab_size", type=int, default=2048)
  parser.add_argument("--batches", type=int, default=4000)
  parser.add_argument("--generated_tokens", type=lambda s: int(float(s[:-1]) * 1e6) if s.endswith("M") else int(s),
                      default=0, help="prepare a generated gzip JSONL corpus of about this many tokens instead")
  parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split("+")], default=[1, 2],
                      help="worker counts to compare, e.g. 1+2 (the speedup row is each over the smallest)")
  parser.add_argument("--repeats", type=int, default=1, help="preparations per worker count (best is kept)")
  parser.add_argument("--bpe_vocab", type=int, default=8192)
  args = parser.parse_args()
  if args.generated_tokens:
    generated(args)
    return

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
