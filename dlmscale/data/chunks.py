"""The chunk store: packed fixed-length token chunks on disk, its manifest, cache key and lock.

A prepared directory holds `manifest.json`, `tokenizer.model`, `train.bin` and `val.bin`; each .bin
is a raw [N, L] array (uint16 when V <= 65536) that is memory-mapped for random access. Directories
are built under a temporary name and renamed into place, under an fcntl lock, so that concurrent runs
needing the same data never both write it and never read a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
from typing import Iterator, Sequence

import numpy as np

from dlmscale.run_dir import flatten
from dlmscale.errors import UserError

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class PackWriter:
  """Appends documents to one token stream, each followed by eod; the stream is cut into chunks."""

  def __init__(self, path: pathlib.Path, dtype: np.dtype, eod_id: int):
    self.path = path
    self.dtype = np.dtype(dtype)
    self.eod_id = eod_id
    self.documents = 0
    self.tokens = 0
    self._file = open(path, "wb")

  def add(self, docs_tokens: Sequence[Sequence[int]]) -> None:
    if not docs_tokens:
      return
    lengths = np.fromiter((len(t) + 1 for t in docs_tokens), dtype=np.int64, count=len(docs_tokens))
    stream = np.full(int(lengths.sum()), self.eod_id, dtype=self.dtype)
    ends = np.cumsum(lengths) - 1  # the eod slots
    starts = ends - lengths + 1
    for tokens, start, end in zip(docs_tokens, starts, ends):
      stream[start:end] = tokens
    stream.tofile(self._file)
    self.documents += len(docs_tokens)
    self.tokens += len(stream)

  def finish(self, seq_len: int) -> dict:
    """Drops the tail shorter than one chunk; returns the split's counts for the manifest."""
    self._file.close()
    n_chunks = self.tokens // seq_len
    os.truncate(self.path, n_chunks * seq_len * self.dtype.itemsize)
    return {
        "documents": self.documents,
        "tokens": self.tokens,  # documents plus one eod each
        "chunks": n_chunks,
        "chunk_tokens": n_chunks * seq_len,
        "dropped_tokens": self.tokens - n_chunks * seq_len,
        "file": self.path.name,
        "sha256": file_sha256(self.path),
    }


def open_chunks(path: pathlib.Path, dtype: str | np.dtype, seq_len: int) -> np.ndarray:
  """A read-only [N, L] memmap of a chunk file (an empty array when it holds no chunk)."""
  dtype = np.dtype(dtype)
  n = path.stat().st_size // (dtype.itemsize * seq_len)
  if n == 0:
    return np.zeros((0, seq_len), dtype)
  return np.memmap(path, dtype=dtype, mode="r", shape=(n, seq_len))


def file_sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# --- identity: cache key, manifest --------------------------------------------------------------


def cache_key(inputs: dict) -> str:
  """Hash of everything that determines the prepared bytes (canonical JSON)."""
  return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def dir_name(corpus_spec: str, vocab_size: int, seq_len: int, key: str) -> str:
  """A readable cache directory name that still names the exact inputs (by their hash)."""
  stem = pathlib.Path(corpus_spec.rstrip("/*")).name or "corpus"
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:40].strip("._") or "corpus"
  return f"{stem}-V{vocab_size}-L{seq_len}-{key[:12]}"


def read_manifest(root: pathlib.Path) -> dict | None:
  path = root / MANIFEST
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, OSError) as e:
    raise UserError(f"{path} is unreadable ({e}); delete {root} and prepare again") from None


def write_manifest(root: pathlib.Path, manifest: dict) -> None:
  (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def input_differences(old: dict, new: dict) -> list[str]:
  """Human-readable `field: old -> new` lines (nested dicts flattened with dots)."""
  a, b = flatten(old), flatten(new)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --- concurrency: lock, temporary directory, atomic publish -------------------------------------


@contextlib.contextmanager
def locked(root: pathlib.Path) -> Iterator[None]:
  """Exclusive lock for building `root` (a sibling lock file; waits while another process builds)."""
  lock_path = root.parent / f".{root.name}.lock"
  with open(lock_path, "a+") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def building(root: pathlib.Path) -> Iterator[pathlib.Path]:
  """A fresh temporary sibling of `root`, renamed onto `root` if the body succeeds, else removed.
  Called under `locked(root)`: the temporary directories of builders that were killed are removed."""
  for stale in root.parent.glob(f".{root.name}.tmp-*"):  # a builder killed mid-way; called under
    shutil.rmtree(stale, ignore_errors=True)             # the lock, so none is being written now
  tmp = root.parent / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}"  # unique on a shared disk
  tmp.mkdir()
  try:
    yield tmp
    if root.is_dir() and not any(root.iterdir()):
      root.rmdir()  # an empty --out_dir the user made beforehand
    os.rename(tmp, root)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def check_cache_writable(cache: pathlib.Path, cache_dir_setting: str) -> None:
  """UserError naming the data cache, where its path came from and how to choose another, when data
  must be prepared in it and this user cannot (a read-only cache still serves data prepared there)."""
  try:
    cache.mkdir(parents=True, exist_ok=True)
    why = None if os.access(cache, os.W_OK | os.X_OK) else "is not writable by this user"
  except OSError as e:
    why = f"cannot be created ({e.strerror})"
  if why is None:
    return
  origin = ("data.cache_dir" if cache_dir_setting else "$DLMSCALE_CACHE" if os.environ.get("DLMSCALE_CACHE")
            else "the default; $DLMSCALE_CACHE is unset")
  raise UserError(f"the data cache {cache} ({origin}) {why}, and the data for these settings must be "
                  "prepared there: set $DLMSCALE_CACHE (or --config.data.cache_dir; --cache_dir for "
                  "python -m dlmscale.data) to a directory you can write, or have these settings "
                  "prepared in it by a user who can")


def make_parent(root: pathlib.Path) -> None:
  try:
    root.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {root.parent} ({e.strerror}); choose another --out_dir/cache_dir") from None
  if not os.access(root.parent, os.W_OK):
    raise UserError(f"{root.parent} is not writable; choose another --out_dir/cache_dir")
