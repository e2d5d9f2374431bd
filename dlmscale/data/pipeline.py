"""Data: U unique tokens repeated for E epochs, from any corpus, prepared once and cached.

`prepare(config.data)` turns a corpus into packed token chunks on disk (see chunks.py), splitting
documents into train/validation first and training the tokenizer on the training split only.
`train_iterator` then draws the U-token budget (the first ceil(U/L) chunks of one seeded permutation,
so budgets are nested) and repeats it E times in a fresh order each epoch.

`python -m dlmscale.data` (dlmscale/commands/prepare_data.py) prepares data on its own.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import os
import pathlib
from typing import TYPE_CHECKING

import ml_collections
import numpy as np

from dlmscale.data import chunks
from dlmscale.data import corpus as corpus_lib
from dlmscale.data import label_noise as label_noise_lib
from dlmscale.data import evalset
from dlmscale.data import index
from dlmscale.data import preprocess
from dlmscale.data import remote
from dlmscale.data import spill
from dlmscale.data import tokenizer as tok
from dlmscale.data.config import DataConfig
from dlmscale.errors import UserError

if TYPE_CHECKING:
  import grain

PREP_VERSION = 1  # bump when preparation changes the bytes it writes: old caches stop matching
_BUDGET_SEED_TAG = 2  # SeedSequence([data.seed, tag]) orders the training chunks for budgets
_SHUFFLE_SEED_TAG = 3  # SeedSequence([seed, tag]) seeds the per-epoch shuffles


@dataclasses.dataclass(frozen=True)
class Prepared:
  root: pathlib.Path  # the prepared-data directory (manifest.json, tokenizer.model, *.bin)
  manifest: dict
  train_chunks: np.ndarray  # memmap, [N_train, L], integer dtype
  val_chunks: np.ndarray  # memmap, [N_val, L]
  vocab_size: int
  mask_id: int
  eod_id: int
  seq_len: int
  tokenizer_path: pathlib.Path
  tokenizer_sha256: str

  def sha256s(self) -> dict[str, str]:
    """Content hashes of what a run trains and is evaluated on (from the manifest)."""
    splits = self.manifest["splits"]
    return {"train": splits["train"]["sha256"], "val": splits["val"]["sha256"],
            "tokenizer": self.tokenizer_sha256}


# --- preparing ------------------------------------------------------------------------------------


def prepare(data_cfg: DataConfig | ml_collections.ConfigDict, *,
            out_dir: str | os.PathLike | None = None) -> Prepared:
  """Prepared data for `data_cfg`, built at most once per distinct input (cached, locked, atomic).

  The directory is `out_dir` when given, else a name derived from the inputs' hash under
  data_cfg.cache_dir, $DLMSCALE_CACHE or ~/.cache/dlmscale. A directory holding data prepared from
  other inputs is never overwritten. Settings prepared before are found without the raw corpus (index.py).
  The raw corpus is read at most once (spill.py): when the stat index knows its content hash, only to
  build; otherwise that read also hashes it, which names the inputs (and may find them prepared).
  """
  cfg = DataConfig.of(data_cfg)
  request = index.request_key(cfg.to_dict(), out_dir and pathlib.Path(out_dir).expanduser().resolve(), PREP_VERSION)
  if indexed := index.find(_cache_dir(cfg), request, cfg.corpus):  # its files' sha256s checked
    return load_prepared(indexed)
  corpus = corpus_lib.open_corpus(cfg.corpus, cfg.format, cfg.text_field, cfg.doc_separator, _cache_dir(cfg))
  given, vocab_size = None, cfg.vocab_size
  if cfg.tokenizer:
    given = remote.local_file(cfg.tokenizer, _cache_dir(cfg))
    vocab_size = _given_vocab_size(tok.load(given), given, vocab_size)
  elif vocab_size < 2:
    raise UserError(f"vocab_size={vocab_size}: set data.vocab_size (e.g. 2048), or give --tokenizer")
  stat = None if corpus.hub is not None else index.stat_record(corpus.files)
  known = stat and index.known_content(_cache_dir(cfg), stat)
  # Until the content hash names it, `root` stands for any directory of the cache.
  root = pathlib.Path(out_dir).expanduser().resolve() if out_dir else _cache_dir(cfg) / "?"
  docs = spill.read_once(corpus, _spill_dir(root)) if corpus.hub is None and not known else None
  try:
    inputs = preprocess.inputs_of(cfg, corpus, known or (docs and docs.content_sha256), vocab_size, given,
                                 PREP_VERSION)
    key = chunks.cache_key(inputs)
    if not out_dir:
      root = root.with_name(chunks.dir_name(corpus.spec, vocab_size, cfg.seq_len, key))
    found = _existing(root, inputs)
    if not found:
      chunks.make_parent(root)
      with chunks.locked(root):
        found = _existing(root, inputs)  # another process may have built it while we waited
        if not found:
          with chunks.building(root) as tmp:
            docs = docs or spill.read_once(corpus, _spill_dir(root))
            preprocess.build(tmp, corpus, docs, cfg, inputs, key, given)
  finally:
    if docs is not None:
      docs.close()
  index.record(_cache_dir(cfg), request, root, stat, inputs["corpus"]["content_sha256"], key)
  return found or load_prepared(root)


def _spill_dir(root: pathlib.Path) -> pathlib.Path | None:
  """Where the corpus's one read is spilled: beside the prepared data, else the system's temporary
  directory (a read-only location whose data turns out to be prepared already)."""
  try:
    chunks.make_parent(root)
  except UserError:
    return None
  return root.parent


def load_prepared(root: str | os.PathLike) -> Prepared:
  """Opens a prepared directory (memory-mapped; nothing is read until used)."""
  root = pathlib.Path(root)
  m = chunks.read_manifest(root)
  if m is None:
    raise UserError(f"{root} holds no {chunks.MANIFEST}: it is not prepared data; run python -m dlmscale.data")
  tok_path = root / m["tokenizer"].get("file", chunks.TOKENIZER)
  return Prepared(
      root=root, manifest=m,
      train_chunks=chunks.open_chunks(root / m["splits"]["train"]["file"], m["dtype"], m["seq_len"]),
      val_chunks=chunks.open_chunks(root / m["splits"]["val"]["file"], m["dtype"], m["seq_len"]),
      vocab_size=m["vocab_size"], mask_id=m["mask_id"], eod_id=m["eod_id"], seq_len=m["seq_len"],
      tokenizer_path=tok_path, tokenizer_sha256=m["tokenizer"]["sha256"])


def _given_vocab_size(sp, path: pathlib.Path, vocab_size: int) -> int:
  v = tok.model_vocab_size(sp)
  if vocab_size not in (0, v):
    raise UserError(f"tokenizer {path} has {sp.get_piece_size()} pieces, so the vocabulary is V={v} "
                    f"(with <mask>{', padded to a multiple of 128' if tok.padding(sp) else ''}), "
                    f"but vocab_size={vocab_size}; set --vocab_size={v} (or 0 to take it from the tokenizer)")
  return v


def _cache_dir(cfg: DataConfig) -> pathlib.Path:
  d = cfg.cache_dir or os.environ.get("DLMSCALE_CACHE") or "~/.cache/dlmscale"
  return pathlib.Path(d).expanduser().resolve()


def _existing(root: pathlib.Path, inputs: dict) -> Prepared | None:
  """The prepared data at root if it matches `inputs`; UserError if root holds anything else."""
  if not root.exists():
    return None
  if not root.is_dir():
    raise UserError(f"{root} exists and is not a directory; choose another --out_dir")
  m = chunks.read_manifest(root)
  if m is None:
    if any(root.iterdir()):
      raise UserError(f"{root} is not empty and holds no {chunks.MANIFEST}; give a new or empty --out_dir")
    return None
  if m.get("inputs") != inputs:
    diff = "; ".join(chunks.input_differences(m.get("inputs", {}), inputs)[:6])
    raise UserError(f"{root} holds data prepared from different inputs ({diff}); use another --out_dir, or "
                    f"delete {root} to prepare it again")
  index.check_files(root, m)  # found by hashing the corpus, not through the index: checked the same
  return load_prepared(root)


# --- budgets and the training pipeline -----------------------------------------------------------


def steps_for_budget(unique_tokens: int, epochs: float, global_batch: int, seq_len: int) -> int:
  """floor(U * E / (B * L)), computed exactly (E=0.1 is one tenth, not 0.1000000000000000055)."""
  if global_batch < 1 or seq_len < 1:
    raise UserError(f"batch_size={global_batch} and seq_len={seq_len} must be positive")
  if unique_tokens < 1:
    raise UserError(f"unique_tokens={unique_tokens} must be positive")
  if unique_tokens < global_batch * seq_len:
    raise UserError(f"unique_tokens={unique_tokens:,} is smaller than one batch (batch_size={global_batch} x "
                    f"seq_len={seq_len} = {global_batch * seq_len:,} tokens); raise unique_tokens or lower "
                    "batch_size")
  steps = exact_steps(unique_tokens, epochs, global_batch, seq_len)
  if steps < 1:
    raise UserError(f"unique_tokens x epochs = {float(unique_tokens * _exact(epochs, 'epochs')):,.0f} tokens is less than one batch "
                    f"({global_batch * seq_len:,} tokens); raise epochs or unique_tokens")
  return steps


def exact_steps(unique_tokens: int, epochs: float, global_batch: int, seq_len: int) -> int:
  """floor(U * E / (B * L)) in exact arithmetic, unchecked: floats give 28 steps for 100 x 0.29."""
  return math.floor(unique_tokens * _exact(epochs, "epochs") / (global_batch * seq_len))


def budget_chunk_ids(n_train_chunks: int, unique_tokens: int, seq_len: int, seed: int) -> np.ndarray:
  """The first ceil(U / L) training chunks of one seeded permutation: a smaller U is a prefix of a larger."""
  if unique_tokens < 1 or seed < 0:
    raise UserError(f"unique_tokens={unique_tokens} must be positive and seed={seed} >= 0")
  k = math.ceil(unique_tokens / seq_len)
  if k > n_train_chunks:
    raise UserError(f"unique_tokens={unique_tokens:,} is larger than the training split, which has "
                    f"{n_train_chunks * seq_len:,} tokens ({n_train_chunks:,} chunks of {seq_len}); lower "
                    "unique_tokens or use a bigger corpus")
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), _BUDGET_SEED_TAG]))
  return rng.permutation(n_train_chunks)[:k]


def train_iterator(prepared: Prepared, *, unique_tokens: int, epochs: float, global_batch: int, seed: int,
                   process_index: int = 0, process_count: int = 1, label_noise: float = 0.0
                   ) -> grain.DatasetIterator:
  """Batches of the U-token budget repeated E times: {"tokens": int32[B/P, L], "epoch": float}.

  A grain MapDataset of chunk positions: shuffle(seed) -> repeat(ceil(E)) (grain reseeds the shuffle
  every epoch) -> global batches of positions, cut to exactly steps_for_budget batches -> this
  host's rows [p*B/P, (p+1)*B/P) read with one fancy-indexed memmap read. "epoch" is the number of
  epochs completed once the batch is consumed. The state is {"next_index": step}, JSON-serialisable.
  label_noise > 0 corrupts that fraction of each training chunk, the same way every epoch (label_noise.py).
  """
  import grain  # pylint: disable=g-import-not-at-top  (imports jax: only training pays for it)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise UserError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  if seed < 0:
    raise UserError(f"seed={seed} must be >= 0")
  if global_batch % process_count:
    raise UserError(f"batch_size={global_batch} must be divisible by the {process_count} processes (hosts)")
  seq_len = prepared.seq_len
  steps = steps_for_budget(unique_tokens, epochs, global_batch, seq_len)
  ids = budget_chunk_ids(len(prepared.train_chunks), unique_tokens, seq_len, prepared.manifest["seed"])
  rows = global_batch // process_count
  noise = label_noise_lib.from_config(label_noise, prepared.manifest["seed"], prepared.vocab_size,
                                      prepared.mask_id)
  reader = _BatchReader(prepared.train_chunks, ids, process_index * rows, rows, global_batch / len(ids), noise)
  # grain reseeds epoch e with seed + e; spreading the user's seed keeps runs with seeds s and s+1 from
  # sharing epoch orders.
  shuffle_seed = int(np.random.SeedSequence([int(seed), _SHUFFLE_SEED_TAG]).generate_state(1)[0])
  ds = grain.MapDataset.range(len(ids)).shuffle(seed=shuffle_seed).repeat(math.ceil(_exact(epochs, "epochs")))
  ds = ds.batch(global_batch, drop_remainder=True)[:steps].map_with_index(reader)
  # No reader threads: one batch is a single ~0.1 ms read, and threads would compete with training.
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)).__iter__()


@dataclasses.dataclass(frozen=True)
class _BatchReader:
  chunks_NxL: np.ndarray
  ids: np.ndarray  # budget position -> training chunk index
  start: int  # this host's first row of the global batch
  rows: int
  epochs_per_batch: float
  noise: label_noise_lib.Corruption | None = None

  def __call__(self, step: int, positions_B: np.ndarray) -> dict:
    ids_b = self.ids[positions_B[self.start:self.start + self.rows]]
    tokens = np.asarray(self.chunks_NxL[ids_b], dtype=np.int32)
    return {"tokens": self.noise(tokens, ids_b) if self.noise else tokens,
            "epoch": (step + 1) * self.epochs_per_batch}


def _exact(x: float, name: str) -> fractions.Fraction:
  try:
    value = fractions.Fraction(str(x))
  except ValueError:
    raise UserError(f"{name}={x!r} is not a number") from None
  if value <= 0:
    raise UserError(f"{name}={x} must be positive")
  return value


# --- evaluation data and the tokenizer ----------------------------------------------------------


def eval_set(prepared: Prepared, num_sequences: int, which: str = "val") -> evalset.EvalSet:
  """N validation chunks spread round-robin over the split's documents (evalset.py): the same
  sequences for every run and both families on this data; `which` is "val" or the disjoint "tune"."""
  return evalset.draw(prepared.val_chunks, prepared.eod_id, num_sequences, prepared.manifest["seed"], which)


def load_tokenizer(prepared: Prepared):
  """The prepared data's tokenizer: a sentencepiece processor or an hf_tokenizer.HFTokenizer."""
  return tok.load(prepared.tokenizer_path)


# --- one pass for a run -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class RunData:
  """A run's data from one pass over the stages: what the trainer, evaluator and sampler read."""
  prepared: Prepared
  total_steps: int  # steps_for_budget: the run's length, which the lr schedule is built for


def for_run(config: ml_collections.ConfigDict) -> RunData:
  """corpus -> split -> tokenizer -> pack -> store -> budget.

  The one call through which a run's config enters the data package, so every input error in the
  data is raised here, before anything else is built.
  """
  prepared = prepare(config.data)
  total = steps_for_budget(config.unique_tokens, config.epochs, config.batch_size, config.data.seq_len)
  return RunData(prepared, total)


def training_inputs(config: ml_collections.ConfigDict, prepared: Prepared, process_index: int = 0,
                    process_count: int = 1) -> tuple[evalset.EvalSet, "grain.DatasetIterator"]:
  """What only training reads: the fixed validation sequences and this host's batch iterator."""
  val_set = eval_set(prepared, config.eval.num_sequences, config.eval.get("set", "val"))
  it = train_iterator(prepared, unique_tokens=config.unique_tokens, epochs=config.epochs,
                      global_batch=config.batch_size, seed=config.seed, process_index=process_index,
                      process_count=process_count, label_noise=config.data.label_noise)
  return val_set, it


# --- what was prepared, in words --------------------------------------------------------------------------------


def summary(prepared: Prepared) -> str:
  m = prepared.manifest
  src, tr, va = m["source"], m["splits"]["train"], m["splits"]["val"]
  version = f" (python {src['python_version']})" if "python_version" in src else ""
  lines = [
      f"prepared data: {prepared.root}",
      f"  source: {src['corpus']}{version}: {src['files']:,} files, {src['bytes']:,} bytes, "
      f"{m['documents']:,} documents, sha256 {src['content_sha256'][:16]}",
      f"  tokenizer: {m['tokenizer']['pieces']:,} pieces ({m['tokenizer']['source']}) + <mask>"
      f"{' + %d padding' % m['vocab_padding'] if m.get('vocab_padding') else ''}: vocab_size={m['vocab_size']}, "
      f"eod_id={m['eod_id']}, mask_id={m['mask_id']}, "
      f"sha256 {m['tokenizer']['sha256'][:16]}",
  ]
  for name, s in (("train", tr), ("val", va)):
    lines.append(f"  {name}: {s['documents']:,} documents, {s['tokens']:,} tokens -> {s['chunks']:,} chunks "
                 f"x {m['seq_len']} = {s['chunk_tokens']:,} tokens ({s['dropped_tokens']:,} tail dropped)")
  lines.append(f"  seed={m['seed']} dtype={m['dtype']} prepared {m['created']} in {m['prepare_seconds']} s")
  return "\n".join(lines)
