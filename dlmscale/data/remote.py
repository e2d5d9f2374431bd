"""Corpora and tokenizers that are not local files: fsspec URLs and Hugging Face Hub datasets.

A URL (`gs://bucket/c4/*.json.gz`, `s3://...`, `https://...`, `memory://...`) is fetched once into
`<cache>/fetched/<protocol>/<remote path>` and read from there; a file already fetched with the same
size is not fetched again. `hf:NAME[:CONFIG[:SPLIT]]` is loaded with `datasets.load_dataset` (which
keeps its own cache, $HF_DATASETS_CACHE) and needs a network the first time; later, and with
HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1, it is read from that cache. NAME may also be a local
dataset directory (`hf:/data/c4:en:train`: data files, and a README whose `configs` name them). Such a
directory changes in place, which datasets' cache and fingerprint do not notice: it is loaded into a
temporary cache each time, and its files' stat is part of its identity (local_stat).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
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


def local_dir(spec: str) -> pathlib.Path | None:
  """The local dataset directory an `hf:` spec names, if it names one (else a Hub dataset)."""
  path = pathlib.Path(parse_hf(spec)[0]).expanduser()
  return path.resolve() if path.is_dir() else None


def local_stat(spec: str) -> list[list] | None:
  """(path, size, mtime_ns) of a local dataset directory's files; None for a Hub dataset."""
  local = local_dir(spec)
  if local is None:
    return None
  files = sorted(p for p in local.rglob("*") if p.is_file() and not any(
      part.startswith(".") for part in p.relative_to(local).parts))
  return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def load_hf(spec: str, tmp_root: pathlib.Path | None = None):
  """The dataset split (downloaded into datasets' own cache on first use; a local directory's
  converted into a temporary cache under `tmp_root`, removed with the dataset object)."""
  name, config, split = parse_hf(spec)
  local = local_dir(spec)
  try:
    import datasets  # pylint: disable=g-import-not-at-top
    if local is None:
      return datasets.load_dataset(name, config, split=split)
    if tmp_root is not None:
      tmp_root.mkdir(parents=True, exist_ok=True)
    cache = tempfile.TemporaryDirectory(prefix=".hf-local-", dir=tmp_root)  # pylint: disable=consider-using-with
    dataset = datasets.load_dataset(str(local), config, split=split, cache_dir=cache.name)
    dataset.dlmscale_cache = cache  # its Arrow files live as long as the dataset object
    return dataset
  except ImportError as e:
    raise UserError(f"corpus {spec!r} needs the datasets package ({e}); pip install -r requirements.txt") from None
  except Exception as e:  # pylint: disable=broad-except  (network, auth, unknown name: all the user's to fix)
    raise _load_error(spec, name, config, split, local, e) from None


def _load_error(spec: str, name: str, config: str | None, split: str, local: pathlib.Path | None,
                e: Exception) -> UserError:
  said = " ".join(str(e).split())[:300] or type(e).__name__  # one line, whatever datasets wrote
  if local is None and (isinstance(e, ConnectionError) or "offline" in said.lower()):
    cache = os.environ.get("HF_DATASETS_CACHE") or "~/.cache/huggingface/datasets"
    return UserError(
        f"Hub dataset {name!r} (config {config or 'default'}, split {split}) is not in the datasets cache "
        f"({cache}) and the Hub cannot be reached ({said}); run the same command once where there is a "
        "network (it fills the cache), point HF_DATASETS_CACHE at a cache that holds it, or give a local "
        f"copy as --corpus=hf:/path/to/dataset_dir:{config or ''}:{split}")
  return UserError(f"cannot load {'dataset directory' if local else 'Hub dataset'} {spec!r} ({said}); check "
                   "the name, config and split" + ("" if local else ", and the network"))


def hf_docs(dataset, spec: str, field: str) -> Iterator[str]:
  if field not in dataset.column_names:
    raise UserError(f"Hub dataset {spec!r} has no field {field!r}; fields present: "
                    f"{', '.join(dataset.column_names)}. Set --text_field (data.text_field)")
  for batch in dataset.iter(batch_size=4096):
    for value in batch[field]:
      if isinstance(value, str) and value.strip():
        yield value
