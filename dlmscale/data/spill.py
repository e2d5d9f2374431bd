"""The corpus's one read: every document streamed once, in corpus order, into a local spill file,
with the corpus files' content_sha256 computed from the same bytes.

Preparation cannot work in a single pass over documents: the split is a seeded permutation of all
documents (it needs their count first), a trained tokenizer needs the whole training split before any
document can be encoded, and a val_tokens target re-encodes candidate documents. Those passes read
the spill (decoded UTF-8, local, usually from the page cache), never the raw corpus again, which may
be compressed, on a network filesystem, or a Hub dataset. The spill is an unnamed temporary file next
to the prepared data (the disk it needs: the corpus's decoded text); the system removes it when it
is closed or the process ends, killed or not.
"""

from __future__ import annotations

import array
import hashlib
import io
import os
import pathlib
import tempfile
from typing import Iterator

import numpy as np

from dlmscale.data import corpus as corpus_lib
from dlmscale.errors import UserError

_BLOCK = 1 << 20
_LENGTH = 8  # bytes of each document's length prefix (little-endian)


class Spill:
  """The documents of one read of a corpus, read back as often as needed in corpus order."""

  def __init__(self, f, doc_chars: np.ndarray, content_sha256: str | None):
    self._f = f
    self.doc_chars = doc_chars  # characters of each document, in corpus order
    self.content_sha256 = content_sha256  # of the corpus files' bytes (None for a Hub dataset)

  def iter_docs(self) -> Iterator[str]:
    """The documents as the corpus gave them; each call reads the spill from its start."""
    with io.BufferedReader(_ReadAt(self._f.fileno()), _BLOCK) as f:
      for _ in range(self.doc_chars.size):
        n = int.from_bytes(f.read(_LENGTH), "little")
        yield f.read(n).decode("utf-8", "surrogatepass")

  def close(self) -> None:
    self._f.close()

  def __enter__(self) -> Spill:
    return self

  def __exit__(self, *_) -> None:
    self.close()


def read_once(corpus: corpus_lib.Corpus, where: pathlib.Path) -> Spill:
  """Reads the corpus (the only time preparation does) into a spill file in directory `where`;
  UserError for a corpus with no document text."""
  hasher = hashlib.sha256() if corpus.hub is None else None
  f = tempfile.TemporaryFile(dir=where, prefix=".corpus-spill-")  # pylint: disable=consider-using-with
  try:
    chars = array.array("q")
    for doc in corpus.iter_docs(hasher):
      data = doc.encode("utf-8", "surrogatepass")  # any str a reader yields, lone surrogates included
      f.write(len(data).to_bytes(_LENGTH, "little"))
      f.write(data)
      chars.append(len(doc))
    f.flush()
  except BaseException:
    f.close()
    raise
  if not chars:
    f.close()
    raise UserError(f"corpus {corpus.spec!r} is empty: its {len(corpus.files)} file(s) hold no document text")
  return Spill(f, np.frombuffer(chars, dtype=np.int64), hasher.hexdigest() if hasher else None)


class _ReadAt(io.RawIOBase):
  """A reader of a file descriptor with its own position (pread), so readers never share an offset."""

  def __init__(self, fd: int):
    super().__init__()
    self._fd, self._pos = fd, 0

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    data = os.pread(self._fd, len(b), self._pos)
    b[:len(data)] = data
    self._pos += len(data)
    return len(data)

  def close(self) -> None:  # the descriptor belongs to the spill
    super().close()
