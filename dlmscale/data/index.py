"""Finding prepared data without reading the raw corpus: a stat index under the data cache.

Two kinds of small JSON records live in `<cache>/index/`:
- `stat-<h>.json`: the content sha256 of a list of corpus files whose (path, size, mtime_ns) hash to
  h, so a corpus that stats the same is not hashed again;
- `request-<h>.json`: for the data settings as given (corpus spec, tokenizer file's stat, split,
  vocabulary, seq_len, seed, out_dir), the prepared directory they produced and the corpus's stat.

A run start, evaluation or sampling with the same settings opens that directory straight away when
the corpus still stats the same or is gone altogether (deleted after preparation); the prepared
files are checked against the sha256s their manifest records instead. Anything else (a file
changed, added or removed) falls back to hashing the corpus. Records are written atomically and
best-effort: a read-only cache only costs the hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Sequence

from dlmscale.data import chunks
from dlmscale.data import corpus as corpus_lib
from dlmscale.data import remote
from dlmscale.errors import UserError

_IGNORED = ("label_noise", "num_workers", "cache_dir")  # settings that do not change the prepared bytes


def stat_record(files: Sequence[pathlib.Path]) -> list[list]:
  out = []
  for p in files:
    st = p.stat()
    out.append([str(p), st.st_size, st.st_mtime_ns])
  return out


def _digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def request_key(settings: dict, out_dir: pathlib.Path | None, version: int) -> str:
  """Identity of a prepare() call as written: local paths made absolute, the tokenizer file by its stat."""
  d = {k: v for k, v in settings.items() if k not in _IGNORED}
  spec = str(d.get("corpus") or "")
  if spec.startswith(remote.HF_PREFIX) and (local := remote.local_stat(spec)) is not None:
    # A local dataset directory, unlike a Hub name, changes in place: its files' stat is part of the request.
    d["corpus"] = [str(remote.local_dir(spec)), remote.parse_hf(spec)[1:], local]
  elif spec and "://" not in spec and not spec.startswith(remote.HF_PREFIX) and spec != "python-stdlib":
    d["corpus"] = os.path.abspath(os.path.expanduser(spec))
  tokenizer = str(d.get("tokenizer") or "")
  if tokenizer and "://" not in tokenizer:
    path = pathlib.Path(tokenizer).expanduser().resolve()
    st = path.stat() if path.is_file() else None
    d["tokenizer"] = [str(path), st.st_size if st else -1, st.st_mtime_ns if st else -1]
  return _digest({"settings": d, "out_dir": str(out_dir or ""), "version": version})


def known_content(cache: pathlib.Path, stat: list[list]) -> str | None:
  """The content sha256 recorded for files that stat exactly like this, if any."""
  rec = _read(cache / "index" / f"stat-{_digest(stat)}.json")
  return rec.get("content_sha256") if rec and rec.get("stat") == stat else None


def lookup(cache: pathlib.Path, key: str) -> dict | None:
  return _read(cache / "index" / f"request-{key}.json")


def record(cache: pathlib.Path, key: str, root: pathlib.Path, stat: list[list] | None,
           content_sha256: str, cache_key: str) -> None:
  """Remembers where `key`'s data is (and its cache key) and what its corpus hashed to (best-effort)."""
  if stat is not None:
    _write(cache / "index" / f"stat-{_digest(stat)}.json", {"stat": stat, "content_sha256": content_sha256})
  _write(cache / "index" / f"request-{key}.json", {"root": str(root), "stat": stat, "key": cache_key})


def _read(path: pathlib.Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def _write(path: pathlib.Path, obj: dict) -> None:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)
  except OSError:
    pass


def find(cache: pathlib.Path, key: str, corpus_spec: str) -> pathlib.Path | None:
  """The prepared directory `key` produced, when the corpus stats as it did then or is gone
  altogether; None: look (and hash) the slow way."""
  entry = lookup(cache, key)
  manifest = chunks.read_manifest(pathlib.Path(entry["root"])) if entry else None
  if manifest is None or manifest.get("key") != entry.get("key"):
    return None  # gone, or since replaced by data prepared from other inputs
  try:
    files = corpus_lib.resolve_files(corpus_spec, cache)
  except UserError:
    files = None  # the raw corpus is gone: the prepared data stands on its own
  if files is not None and (entry["stat"] is None or stat_record(files) != entry["stat"]):
    return None
  root = pathlib.Path(entry["root"])
  check_files(root, manifest)
  return root


def check_files(root: pathlib.Path, manifest: dict) -> None:
  """UserError unless the chunk files and the tokenizer hash as the manifest records."""
  tokenizer = manifest["tokenizer"]
  for path, sha in ((root / manifest["splits"]["train"]["file"], manifest["splits"]["train"]["sha256"]),
                    (root / manifest["splits"]["val"]["file"], manifest["splits"]["val"]["sha256"]),
                    (root / tokenizer.get("file", chunks.TOKENIZER), tokenizer["sha256"])):
    if not path.is_file() or chunks.file_sha256(path) != sha:
      raise UserError(f"{path} does not match the sha256 its manifest records (changed or damaged since "
                      f"preparation); re-prepare it: rm -r {root}, then run the same command again (or "
                      "python -m dlmscale.data with the same data settings), which prepares it afresh")
