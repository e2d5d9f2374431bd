"""Corpus file formats, decided by content as well as by name, and their document readers.

A file's compression (gzip, zstd, bz2, xz) and Parquet-ness are read from its first bytes and must
agree with its name: gzip bytes in a `.jsonl`, a `.gz` that is not gzip, or a binary file (NUL bytes)
among text are a UserError naming the file, never read as text. A Hugging Face dataset saved with
`datasets.save_to_disk` is a directory of Arrow stream files, read in the order its state.json lists.

Every reader takes an optional `tap`: a callable handed each of the file's raw bytes, in order and
exactly once, as the reader reads them (preparation hashes the corpus from the same read).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import json
import lzma
import pathlib
from typing import BinaryIO, Callable, Iterator

from dlmscale.errors import UserError

MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
PARQUET_MAGIC = b"PAR1"
COMPRESSION_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
_SUFFIX_FOR = {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2", "xz": ".xz"}
EXT_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
              ".arrow": "arrow"}
_SNIFF_BYTES = 1 << 16  # decompressed bytes searched for NUL (a binary file)
_BLOCK = 1 << 20
Tap = Callable[[memoryview], object]
SAVED_DATASET_FILES = ("dataset_info.json", "state.json")


@dataclasses.dataclass(frozen=True)
class FileFormat:
  format: str  # text | jsonl | parquet | arrow
  compression: str  # "" | gzip | zstd | bz2 | xz


def by_name(path: pathlib.Path) -> FileFormat:
  """What the file's name says: `c4-train.00000-of-01024.json.gz` is gzip-compressed JSONL."""
  suffixes = [s.lower() for s in path.suffixes]
  compression = COMPRESSION_SUFFIX.get(suffixes[-1], "") if suffixes else ""
  inner = path.with_suffix("").suffix.lower() if compression else path.suffix.lower()
  return FileFormat(EXT_FORMAT.get(inner, "text"), compression)


def sniff_compression(head: bytes) -> str:
  name = next((name for name, magic in MAGIC.items() if head.startswith(magic)), "")
  if name == "bz2" and not (head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")):
    return ""  # text that happens to start with "BZh": a bzip2 header is followed by a block magic
  return name


def detect(path: pathlib.Path, fmt: str = "auto") -> FileFormat:
  """The file's format from its name (or `fmt`) checked against its bytes; UserError on any mismatch."""
  named = by_name(path)
  want = named.format if fmt == "auto" else fmt
  with open(path, "rb") as f:
    head = f.read(16)
  if want == "arrow":
    return FileFormat("arrow", "")
  if head.startswith(PARQUET_MAGIC) or want == "parquet":
    if want != "parquet" or named.compression or not head.startswith(PARQUET_MAGIC):
      raise UserError(f"{path} is {'a Parquet file' if head.startswith(PARQUET_MAGIC) else 'not Parquet'} "
                      f"but is read as {want}{' (' + named.compression + ')' if named.compression else ''}; "
                      "name Parquet files .parquet (and only those), or remove it from the corpus")
    return FileFormat("parquet", "")
  actual = sniff_compression(head)
  if actual != named.compression:
    if actual:
      raise UserError(f"{path} holds {actual}-compressed bytes but its name does not say so; rename it to "
                      f"end in {path.suffix}{_SUFFIX_FOR[actual]} so it is decompressed (it is never read as text)")
    raise UserError(f"{path} is named {path.suffix} but is not {named.compression}-compressed "
                    f"(it starts with bytes {head[:6].hex()}); fix the file or its name")
  with open_binary(path, actual) as f:
    try:
      block = f.read(_SNIFF_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as e:
      raise UserError(f"{path} is a damaged {actual} file ({e}); fetch it again or remove it") from None
  if b"\x00" in block:
    raise UserError(f"{path} is a binary file (it holds NUL bytes), not {want}; remove it from the corpus "
                    "or narrow the glob")
  return FileFormat(want, actual)


def open_binary(path: pathlib.Path, compression: str, raw: BinaryIO | None = None) -> BinaryIO:
  """The file's decompressed bytes as a stream (read from `raw` when given: see tapped)."""
  source = raw if raw is not None else path  # a path is opened (and closed) by the decompressor
  if compression == "gzip":
    return gzip.open(source, "rb")
  if compression == "bz2":
    return bz2.open(source, "rb")
  if compression == "xz":
    return lzma.open(source, "rb")
  if raw is None:
    raw = open(path, "rb")  # pylint: disable=consider-using-with  (closed with the reader)
  if compression == "zstd":
    import zstandard  # pylint: disable=g-import-not-at-top  (only zstd users pay for the import)
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                                        closefd=True))
  return raw


class Tapped(io.RawIOBase):
  """A file's raw bytes, each also handed to `tap` once as it is read; `drain()` reads (and taps) what
  a reader left unread, e.g. after a compressed stream's end, so the tap sees the whole file."""

  def __init__(self, path: pathlib.Path, tap: Tap | None):
    super().__init__()
    self._f = open(path, "rb", buffering=0)  # pylint: disable=consider-using-with  (closed with self)
    self._tap = tap

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    n = self._f.readinto(b)
    if n and self._tap is not None:
      self._tap(memoryview(b)[:n])
    return n

  def readall(self) -> bytes:
    parts = []
    while block := self.read(_BLOCK):
      parts.append(block)
    return b"".join(parts)

  def drain(self) -> None:
    block = bytearray(_BLOCK)
    while self.readinto(block):
      pass

  def close(self) -> None:
    self._f.close()
    super().close()


def read_text(path: pathlib.Path, compression: str, tap: Tap | None = None) -> str:
  with Tapped(path, tap) as raw:
    if not compression:
      data = raw.readall()
    else:
      with open_binary(path, compression, raw) as f:
        data = _decompressed(path, compression, f.read)
        raw.drain()
  return data.decode("utf-8", errors="replace")


def text_lines(path: pathlib.Path, compression: str, tap: Tap | None = None) -> Iterator[str]:
  """The file's lines, decoded as UTF-8 (undecodable bytes replaced), as `open(path)` would give them."""
  with Tapped(path, tap) as raw:
    binary = open_binary(path, compression, io.BufferedReader(raw, _BLOCK)) if compression else \
        io.BufferedReader(raw, _BLOCK)
    with binary, io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as f:
      try:
        yield from f
      except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"{path} is a damaged {compression} file ({e}); fetch it again or remove it") from None
      raw.drain()


def mapped(path: pathlib.Path, tap: Tap | None = None):
  """A pyarrow memory map of the file, its bytes handed to `tap` first (one read from the disk)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  source = pa.memory_map(str(path))
  if tap is not None and source.size():
    view = memoryview(source.read_buffer())
    for i in range(0, len(view), _BLOCK << 6):
      tap(view[i:i + (_BLOCK << 6)])
    source.seek(0)
  return source


def _decompressed(path, compression, read):
  try:
    return read()
  except (OSError, EOFError, lzma.LZMAError) as e:
    raise UserError(f"{path} is a damaged {compression} file ({e}); fetch it again or remove it") from None


# --- Hugging Face datasets saved to disk ---------------------------------------------------------


def is_saved_dataset(path: pathlib.Path) -> bool:
  return path.is_dir() and (all((path / n).is_file() for n in SAVED_DATASET_FILES)
                            or (path / "dataset_dict.json").is_file())


def saved_dataset_files(path: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """The Arrow files of a `save_to_disk` directory, in the dataset's row order."""
  if (path / "dataset_dict.json").is_file():
    splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
    raise UserError(f"{path} is a saved DatasetDict with splits {', '.join(splits) or '(none)'}; give one "
                    f"split's directory, e.g. --corpus={path / (splits[0] if splits else 'train')}")
  try:
    state = json.loads((path / "state.json").read_text())
    files = tuple(path / d["filename"] for d in state["_data_files"])
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise UserError(f"{path}/state.json is not a datasets save_to_disk state ({e}); save the dataset again") from None
  missing = [str(f) for f in files if not f.is_file()]
  if missing or not files:
    raise UserError(f"saved dataset {path} lacks its Arrow files ({', '.join(missing) or 'none listed'}); "
                    "save the dataset again")
  return files


def arrow_docs(path: pathlib.Path, field: str, tap: Tap | None = None) -> Iterator[str]:
  """Documents of one Arrow file (the IPC stream format `datasets` writes, or the file format)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  source = mapped(path, tap)
  try:
    reader = pa.ipc.open_stream(source)
  except pa.ArrowInvalid:
    source.seek(0)
    try:
      reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid as e:
      raise UserError(f"{path} is not an Arrow file ({e}); give the directory save_to_disk wrote") from None
  names = reader.schema.names
  if field not in names:
    raise UserError(f"Arrow file {path} has no field {field!r}; fields present: {', '.join(names) or '(none)'}. "
                    "Set --text_field (data.text_field) to the field holding the text")
  if isinstance(reader, pa.ipc.RecordBatchFileReader):
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
  else:
    batches = reader
  for batch in batches:
    for value in batch.column(names.index(field)).to_pylist():
      if isinstance(value, str) and value.strip():
        yield value
