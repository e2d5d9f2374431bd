"""Corpora and tokenizers that are not local files: fsspec URLs and Hugging Face Hub datasets.

A URL (`gs://bucket/c4/*.json.gz`, `s3://...`, `https://...`, `memory://...`) is fetched once into
`<cache>/fetched/<protocol>/<remote path>` and read from there; a file already fetched with the same
size is not fetched again. `hf:NAME[:CONFIG[:SPLIT]]` is loaded with `datasets.load_dataset` (which
keeps its own cache) and needs a network the first time.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterator

from dlmscale.errors import UserError

HF_PREFIX = "hf:"


def is_url(spec: str) -> bool:
  return "://" in spec and not spec.startswith("file://")


def fetch(url: str, cache_root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  """Local copies of the files a URL (a file, a directory or a glob) names, in remote path order."""
  fs, remote = _filesystem(url)
  try:
    paths = sorted(fs.glob(remote) if any(c in remote for c in "*?[") else
                   (fs.find(remote) if fs.isdir(remote) else [remote] if fs.exists(remote) else []))
  except OSError as e:
    raise UserError(f"cannot list {url} ({e}); check the URL and your credentials") from None
  paths = [p for p in paths if not any(part.startswith(".") for part in p.split("/"))]
  if not paths:
    raise UserError(f"no files match corpus URL {url!r}; check the path (and the glob)")
  root = cache_root / "fetched" / fs.protocol_name
  return tuple(_fetch_one(fs, p, root / p.lstrip("/"), url) for p in paths)


def local_file(spec: str, cache_root: pathlib.Path) -> pathlib.Path:
  """A given file (a tokenizer) as a local path: a URL's fetched into the cache."""
  return fetch_file(spec, cache_root) if is_url(spec) else pathlib.Path(spec).expanduser().resolve()


def fetch_file(url: str, cache_root: pathlib.Path) -> pathlib.Path:
  """A local copy of one remote file (a tokenizer)."""
  fs, remote = _filesystem(url)
  if not fs.isfile(remote):
    raise UserError(f"{url} does not exist (or is not a file); give a tokenizer file's URL")
  return _fetch_one(fs, remote, cache_root / "fetched" / fs.protocol_name / remote.lstrip("/"), url)


def _filesystem(url: str):
  try:
    import fsspec  # pylint: disable=g-import-not-at-top
    fs, remote = fsspec.core.url_to_fs(url)
  except (ImportError, ValueError) as e:
    raise UserError(f"cannot open {url}: {e}; install the fsspec backend for it (gcsfs for gs://, s3fs for "
                    "s3://, aiohttp for https://)") from None
  protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
  fs.protocol_name = protocol  # where its files go under the cache
  return fs, remote


def _fetch_one(fs, remote: str, local: pathlib.Path, url: str) -> pathlib.Path:
  try:
    size = fs.size(remote)
    if local.is_file() and local.stat().st_size == size:
      return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part-{os.getpid()}")
    fs.get_file(remote, str(tmp))
    os.replace(tmp, local)
  except OSError as e:
    raise UserError(f"cannot fetch {remote} of {url} into {local.parent} ({e}); check the URL, credentials "
                    "and free space") from None
  return local


# --- Hugging Face Hub datasets ----------------------------------------------------------------


def parse_hf(spec: str) -> tuple[str, str | None, str]:
  """`hf:NAME[:CONFIG[:SPLIT]]` -> (name, config, split); the split defaults to train."""
  parts = spec[len(HF_PREFIX):].split(":")
  if not parts[0] or len(parts) > 3:
    raise UserError(f"corpus {spec!r}: write a Hub dataset as hf:NAME[:CONFIG[:SPLIT]], e.g. hf:allenai/c4:en:train")
  name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), (
      parts[2] if len(parts) > 2 and parts[2] else "train")
  return name, config, split


def load_hf(spec: str):
  """The dataset split (downloaded into datasets' own cache on first use)."""
  name, config, split = parse_hf(spec)
  try:
    import datasets  # pylint: disable=g-import-not-at-top
    return datasets.load_dataset(name, config, split=split)
  except ImportError as e:
    raise UserError(f"corpus {spec!r} needs the datasets package ({e}); pip install -r requirements.txt") from None
  except Exception as e:  # pylint: disable=broad-except  (network, auth, unknown name: all the user's to fix)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"cannot load Hub dataset {spec!r} ({first}); check the name, config, split and network") from None


def hf_docs(dataset, spec: str, field: str) -> Iterator[str]:
  if field not in dataset.column_names:
    raise UserError(f"Hub dataset {spec!r} has no field {field!r}; fields present: "
                    f"{', '.join(dataset.column_names)}. Set --text_field (data.text_field)")
  for batch in dataset.iter(batch_size=4096):
    for value in batch[field]:
      if isinstance(value, str) and value.strip():
        yield value
