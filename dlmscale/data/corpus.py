"""Corpus sources (Python stdlib, text, JSONL, Parquet, saved and Hub datasets) and the document split.

A corpus is a fixed, ordered list of files; documents are read from them lazily and in the same order
on every pass, so preparing data never needs the whole corpus in memory. Each file's format and
compression are decided by its name and checked against its bytes (formats.py); URLs are fetched
into the cache first and Hub datasets loaded through `datasets` (remote.py).
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import hashlib
import json
import os
import pathlib
import platform
import sysconfig
from typing import Iterator

import numpy as np

from dlmscale.data import formats as formats_lib
from dlmscale.data import remote
from dlmscale.errors import UserError

STDLIB = "python-stdlib"
FORMATS = ("auto", "text", "jsonl", "parquet", "arrow")
_SPLIT_SEED_TAG = 1  # seeds the document permutation: SeedSequence([seed, tag])


@dataclasses.dataclass(frozen=True)
class Corpus:
  spec: str  # what the user wrote: "python-stdlib", a path, a directory or a glob
  files: tuple[pathlib.Path, ...]
  formats: tuple[str, ...]  # per file: text | jsonl | parquet | arrow (or hf: one Hub dataset)
  text_field: str
  doc_separator: str  # "" = one document per text file
  compressions: tuple[str, ...] = ()  # per file: "" | gzip | zstd | bz2 | xz
  hub: object = None  # a Hub dataset (datasets.Dataset) for hf:NAME specs

  def iter_docs(self, hasher=None) -> Iterator[str]:
    """Every non-empty document, in corpus order (the order is part of the data's identity).
    `hasher` (a hashlib object): fed each file's length and bytes from this same read, which makes it
    the files' content_sha256 once every document was taken."""
    if self.hub is not None:
      yield from remote.hf_docs(self.hub, self.spec, self.text_field)
      return
    for path, fmt, comp in zip(self.files, self.formats, self.compressions or ("",) * len(self.files)):
      tap = None
      if hasher is not None:
        hasher.update(path.stat().st_size.to_bytes(8, "little"))
        tap = hasher.update
      if fmt == "jsonl":
        yield from _jsonl_docs(path, self.text_field, comp, tap)
      elif fmt == "parquet":
        yield from _parquet_docs(path, self.text_field, tap)
      elif fmt == "arrow":
        yield from formats_lib.arrow_docs(path, self.text_field, tap)
      else:
        yield from _text_docs(path, self.doc_separator, comp, tap)

  def fingerprint(self, content_sha256_: str | None) -> dict:
    """What identifies the corpus's content: the cache key uses it, the manifest records it.
    `content_sha256_`: the files' content_sha256, from the stat index (index.py) or from the one read
    of the corpus (spill.py); a Hub dataset is named by its datasets fingerprint instead."""
    if self.hub is not None:
      fp = {"kind": "hf", "files": 0, "bytes": 0, "content_sha256": str(getattr(self.hub, "_fingerprint", "")),
            "rows": len(self.hub)}
      if (local := remote.local_stat(self.spec)) is not None:  # datasets' fingerprint misses local edits
        fp["local_files_sha256"] = hashlib.sha256(json.dumps(local).encode()).hexdigest()
      return fp
    fp = {
        "kind": STDLIB if self.spec == STDLIB else "files",
        "files": len(self.files),
        "bytes": sum(p.stat().st_size for p in self.files),
        "content_sha256": content_sha256_ or content_sha256(self.files),
    }
    if self.spec == STDLIB:
      fp["python_version"] = platform.python_version()  # the stdlib is versioned with the interpreter
    return fp


def open_corpus(spec: str, fmt: str = "auto", text_field: str = "text", doc_separator: str = "",
                cache_dir: str | os.PathLike | None = None) -> Corpus:
  """Resolves a corpus spec to its files and checks each file's bytes against its format; UserError for
  a missing path, nothing to read, or a file that is not what its name says."""
  if fmt not in FORMATS:
    raise UserError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
  spec = str(spec or STDLIB)
  if spec.startswith(remote.HF_PREFIX):
    if not text_field:
      raise UserError("a Hub dataset needs a text field: set --text_field (data.text_field)")
    return Corpus(spec, (), ("hf",), text_field, "", (), remote.load_hf(spec, cache_dir and pathlib.Path(cache_dir)))
  files = resolve_files(spec, cache_dir)
  saved = formats_lib.is_saved_dataset(_local(spec))
  found = tuple(formats_lib.FileFormat("arrow", "") if saved else
                formats_lib.FileFormat("text", "") if spec == STDLIB else formats_lib.detect(p, fmt) for p in files)
  formats = tuple(f.format for f in found)
  if any(f != "text" for f in formats) and not text_field:
    raise UserError("JSONL/Parquet/Arrow input needs a text field: set --text_field (data.text_field)")
  return Corpus(spec, files, formats, text_field, decode_separator(doc_separator), tuple(f.compression for f in found))


def resolve_files(spec: str, cache_dir: str | os.PathLike | None = None) -> tuple[pathlib.Path, ...]:
  """The corpus's files, in order, without reading them (a URL's are fetched into the cache first)."""
  spec = str(spec or STDLIB)
  if spec == STDLIB:
    return stdlib_files()
  if remote.is_url(spec):
    return remote.fetch(spec, pathlib.Path(cache_dir or "~/.cache/dlmscale").expanduser())
  return _resolve_paths(spec)


def _local(spec: str) -> pathlib.Path:
  return pathlib.Path("/nonexistent") if spec == STDLIB or remote.is_url(spec) else pathlib.Path(spec).expanduser()


def stdlib_files() -> tuple[pathlib.Path, ...]:
  """Every .py file of the running interpreter's standard library (no site-packages), sorted by path."""
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  skip = {"site-packages", "dist-packages", "__pycache__"}
  files = []
  for d, subdirs, names in os.walk(root):
    subdirs[:] = [s for s in subdirs if s not in skip]  # never descend into installed packages
    files.extend(pathlib.Path(d, n) for n in names if n.endswith(".py"))
  return tuple(sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(root).as_posix()))


def decode_separator(sep: str) -> str:
  r"""A separator typed on a command line (`\n\n`) means the characters, not the backslashes."""
  if "\\" in sep:
    try:
      return codecs.decode(sep, "unicode_escape")
    except UnicodeDecodeError as e:
      raise UserError(f"cannot read doc_separator {sep!r}: {e}") from None
  return sep


def content_sha256(files: tuple[pathlib.Path, ...]) -> str:
  """Hash of the files' bytes in order (length-prefixed, so boundaries count; names do not)."""
  h = hashlib.sha256()
  for path in files:
    h.update(path.stat().st_size.to_bytes(8, "little"))
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()


def _resolve_paths(spec: str) -> tuple[pathlib.Path, ...]:
  path = pathlib.Path(spec).expanduser()
  if any(c in spec for c in "*?["):
    files = [pathlib.Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)]
    files = [p for p in files if p.is_file()]
    if not files:
      raise UserError(f"no files match corpus glob {spec!r}")
  elif formats_lib.is_saved_dataset(path):
    return formats_lib.saved_dataset_files(path.resolve())
  elif path.is_dir():
    files = [p for p in path.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
      raise UserError(f"corpus directory {spec!r} holds no files (the corpus is empty)")
  elif path.is_file():
    files = [path]
  else:
    raise UserError(f"corpus path {spec!r} does not exist; give an existing file, directory or glob, "
                    f"or --corpus={STDLIB} for the built-in corpus")
  return tuple(sorted(p.resolve() for p in files))


def _text_docs(path: pathlib.Path, separator: str, compression: str = "", tap=None) -> Iterator[str]:
  text = formats_lib.read_text(path, compression, tap)
  parts = text.split(separator) if separator else [text]
  for part in parts:
    doc = part.strip("\r\n") if separator else part
    if doc.strip():
      yield doc


def _missing_field(where: str, field: str, present: list[str]) -> UserError:
  shown = ", ".join(present) if present else "(none)"
  return UserError(f"{where} has no field {field!r}; fields present: {shown}. "
                   f"Set --text_field (data.text_field) to the field holding the text")


def _jsonl_docs(path: pathlib.Path, field: str, compression: str = "", tap=None) -> Iterator[str]:
  for lineno, line in enumerate(formats_lib.text_lines(path, compression, tap), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{lineno} is not valid JSON ({e.msg}); JSONL needs one object per line") from None
    if not isinstance(record, dict):
      raise UserError(f"{path}:{lineno} is a JSON {type(record).__name__}, not an object with a text field")
    if field not in record:
      raise _missing_field(f"{path}:{lineno}", field, list(record))
    value = record[field]
    if value is None:
      continue
    if not isinstance(value, str):
      raise UserError(f"{path}:{lineno}: field {field!r} holds a {type(value).__name__}, not text")
    if value.strip():
      yield value


def _parquet_docs(path: pathlib.Path, field: str, tap=None) -> Iterator[str]:
  import pyarrow  # pylint: disable=g-import-not-at-top  (only Parquet users pay for the import)
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    pf = pq.ParquetFile(formats_lib.mapped(path, tap))
  except (pyarrow.ArrowException, OSError) as e:
    raise UserError(f"cannot read Parquet file {path}: {e}") from None
  names = pf.schema_arrow.names
  if field not in names:
    raise _missing_field(f"Parquet file {path}", field, names)
  kind = pf.schema_arrow.field(field).type
  if not (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind)):
    raise UserError(f"Parquet file {path}: field {field!r} has type {kind}, not string")
  for batch in pf.iter_batches(columns=[field], batch_size=4096):
    for value in batch.column(0).to_pylist():
      if value and value.strip():
        yield value


# --- the document split -------------------------------------------------------------------------


def doc_permutation(n_docs: int, seed: int) -> np.ndarray:
  """The seeded order in which documents are offered to validation (its first k are held out)."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_SEED_TAG]))
  return rng.permutation(n_docs)


def val_doc_count(n_docs: int, val_fraction: float) -> int:
  """Documents held out for a validation fraction: at least one, and never all of them."""
  if not 0.0 <= val_fraction < 1.0:
    raise UserError(f"val_fraction={val_fraction} must be in [0, 1)")
  if val_fraction == 0.0:
    return 0
  n_val = max(1, round(n_docs * val_fraction))
  if n_val >= n_docs:
    raise UserError(f"the corpus has only {n_docs} document(s): holding out {n_val} for validation leaves "
                    "none for training; add documents, split files with --doc_separator, or lower val_fraction")
  return n_val
