"""Preparation reads the raw corpus once (dlmscale/data/spill.py), and `hf:` corpora go through
datasets.load_dataset from a local dataset directory or an offline Hub cache (dlmscale/data/remote.py)."""

from __future__ import annotations

import builtins
import collections
import gzip
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from dlmscale.data import corpus as corpus_lib
from dlmscale.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


def _docs(n: int, tag: str = "") -> list[str]:
  """Real-looking text: slices of stdlib source, one document each."""
  import sysconfig
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  text = "".join((stdlib / name).read_text() for name in ("textwrap.py", "string.py", "heapq.py", "glob.py"))
  return [f"{tag}{i} " + text[(i * 1700) % (len(text) - 1200):][:1200] for i in range(n)]


def _jsonl(docs: list[str]) -> bytes:
  return "".join(json.dumps({"text": d, "url": f"u{i}"}) + "\n" for i, d in enumerate(docs)).encode()


def _cfg(corpus, cache, **kw) -> dict:
  return {"corpus": str(corpus), "cache_dir": str(cache), "vocab_size": 400, "seq_len": 64, "num_workers": 2,
          **kw}


# --- the corpus is read once --------------------------------------------------------------------


class _Reads:
  """Counts the bytes read from files under `root`, through every Python open (builtins, io, pathlib,
  gzip): the raw corpus's files are only ever read through these."""

  def __init__(self, root: pathlib.Path, monkeypatch):
    self.bytes: collections.Counter = collections.Counter()
    real_open = io.open
    reads = self

    class Counted(io.FileIO):
      def read(self, size=-1):
        data = super().read(size)
        reads.bytes[self.name] += len(data or b"")
        return data

      def readall(self):
        data = super().readall()
        reads.bytes[self.name] += len(data)
        return data

      def readinto(self, b):
        n = super().readinto(b)
        reads.bytes[self.name] += n or 0
        return n

    def counting_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True,
                      opener=None):
      path = pathlib.Path(os.fsdecode(file)).resolve() if isinstance(file, (str, bytes, os.PathLike)) else None
      if path is None or root not in path.parents or set(mode) & set("wax+"):
        return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
      raw = Counted(str(path), "r")
      if "b" in mode and buffering == 0:
        return raw
      buffered = io.BufferedReader(raw, buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE)
      return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding, errors, newline)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)

  def take(self) -> dict[str, int]:
    out, self.bytes = dict(self.bytes), collections.Counter()
    return out


def _one_shot(monkeypatch) -> list[int]:
  """Corpus.iter_docs becomes a source that can be streamed only once per prepare()."""
  calls, real = [], corpus_lib.Corpus.iter_docs

  def once(self, *args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
      raise AssertionError("the corpus was streamed a second time")
    return real(self, *args, **kwargs)

  monkeypatch.setattr(corpus_lib.Corpus, "iter_docs", once)
  return calls


@pytest.mark.parametrize("settings", [{}, {"val_tokens": 3000}, {"tokenizer": "given"}],
                         ids=["trained", "val_tokens", "given_tokenizer"])
def test_preparation_reads_each_corpus_byte_once(tmp_path, monkeypatch, settings):
  root = tmp_path / "corpus"
  root.mkdir()
  for k in range(3):
    (root / f"part{k}.jsonl.gz").write_bytes(gzip.compress(_jsonl(_docs(60, f"p{k}-")), mtime=0))
  files = sorted(root.iterdir())
  sizes = {str(p): p.stat().st_size for p in files}
  if settings.get("tokenizer"):  # a sentencepiece model prepared from another corpus
    (tmp_path / "other.jsonl").write_bytes(_jsonl(_docs(80, "o")))
    other = pipeline.prepare(_cfg(tmp_path / "other.jsonl", tmp_path / "cache0"))
    settings = {"tokenizer": str(other.tokenizer_path), "vocab_size": 0}
  reads = _Reads(root.resolve(), monkeypatch)
  corpus_lib.open_corpus(str(root))  # what checking each file's format reads (its first bytes)
  sniffed = reads.take()
  calls = _one_shot(monkeypatch)
  p = pipeline.prepare(_cfg(root, tmp_path / "cache", **settings))
  read = reads.take()
  assert len(calls) == 1
  assert {f: read[f] - sniffed.get(f, 0) for f in read} == sizes  # every byte once, the hash included
  monkeypatch.undo()
  assert p.manifest["source"]["content_sha256"] == corpus_lib.content_sha256(tuple(files))

  # The files touched (a stat the index does not know), the content the same: the one read hashes
  # them, finds the data prepared, and builds nothing.
  for f in files:
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
  reads = _Reads(root.resolve(), monkeypatch)
  calls = _one_shot(monkeypatch)
  monkeypatch.setattr(pipeline.preprocess, "build", lambda *a: pytest.fail("built again"))
  again = pipeline.prepare(_cfg(root, tmp_path / "cache", **settings))
  read = reads.take()
  assert again.root == p.root and len(calls) == 1
  assert {f: read[f] - sniffed.get(f, 0) for f in read} == sizes


def test_spill_keeps_every_document_exactly(tmp_path):
  from dlmscale.data import spill
  docs = ["plain", "\ud800 lone surrogate", "emoji \U0001F600 and \r\n line ends", "x" * 100_000, "\x00 nul"]
  (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  corpus = corpus_lib.open_corpus(str(tmp_path / "c.jsonl"))
  with spill.read_once(corpus, tmp_path) as s:
    assert list(s.iter_docs()) == docs and list(s.iter_docs()) == docs  # read back as often as needed
    assert s.doc_chars.tolist() == [len(d) for d in docs]
    assert s.content_sha256 == corpus_lib.content_sha256(corpus.files)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # the spill leaves nothing behind


# --- hf: corpora, offline -------------------------------------------------------------------------

_README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*.json.gz
  - split: validation
    path: en/c4-validation.*.json.gz
- config_name: de
  data_files:
  - split: train
    path: de/c4-train.*.json.gz
---
"""


def _hf_env(tmp: pathlib.Path) -> dict[str, str]:
  """No network, and datasets' caches inside the test's directory."""
  return subprocess_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf"),
                        HF_DATASETS_CACHE=str(tmp / "hf" / "datasets"), HF_HUB_DISABLE_TELEMETRY="1")


def _prepare_cli(tmp: pathlib.Path, corpus: str, out: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "dlmscale.data", f"--corpus={corpus}", f"--out_dir={tmp / out}",
                         "--vocab_size=400", "--seq_len=64", f"--cache_dir={tmp / 'cache'}"], cwd=REPO,
                        capture_output=True, text=True, timeout=600, env=_hf_env(tmp))


def _bins(root: pathlib.Path) -> list[bytes]:
  return [(root / name).read_bytes() for name in ("train.bin", "val.bin", "tokenizer.model")]


def test_hf_specs_load_through_datasets_offline(tmp_path):
  """hf:DIR:CONFIG:SPLIT (a local dataset with C4's file layout), hf:ORG/NAME:CONFIG:SPLIT from the
  datasets cache with the Hub unreachable, and the one-line error when the cache lacks it."""
  data = tmp_path / "tinyc4"
  shards = {"en/c4-train.00000-of-00002": _docs(50, "a"), "en/c4-train.00001-of-00002": _docs(40, "b"),
            "en/c4-validation.00000-of-00001": _docs(5, "v"), "de/c4-train.00000-of-00001": _docs(30, "d")}
  for name, docs in shards.items():
    (data / name).parent.mkdir(parents=True, exist_ok=True)
    (data / f"{name}.json.gz").write_bytes(gzip.compress(_jsonl(docs), mtime=0))
  (data / "README.md").write_text(_README)
  plain = tmp_path / "en-train.jsonl"  # the same documents as one JSONL file, in shard order
  plain.write_bytes(_jsonl(shards["en/c4-train.00000-of-00002"] + shards["en/c4-train.00001-of-00002"]))
  expected = pipeline.prepare(_cfg(plain, tmp_path / "cache", num_workers=0), out_dir=tmp_path / "plain")

  local = _prepare_cli(tmp_path, f"hf:{data}:en:train", "local")
  assert local.returncode == 0, local.stderr[-2000:]
  assert _bins(tmp_path / "local") == _bins(expected.root)
  manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
  assert manifest["documents"] == 90 and manifest["source"]["kind"] == "hf"
  # The directory edited in place (datasets' own cache would serve the old rows): prepared anew.
  with open(data / "en/c4-train.00001-of-00002.json.gz", "ab") as f:
    f.write(gzip.compress(_jsonl(_docs(3, "new")), mtime=0))
  edited = _prepare_cli(tmp_path, f"hf:{data}:en:train", "edited")
  assert edited.returncode == 0, edited.stderr[-2000:]
  assert json.loads((tmp_path / "edited" / "manifest.json").read_text())["documents"] == 93
  assert not list((tmp_path / "cache").glob(".hf-local-*"))  # its temporary datasets cache is gone
  (data / "en/c4-train.00001-of-00002.json.gz").write_bytes(gzip.compress(
      _jsonl(shards["en/c4-train.00001-of-00002"]), mtime=0))

  # What a download of the Hub dataset test-org/tinyc4 leaves in the cache (datasets names its
  # directory org___name); then the Hub name is prepared with no network at all.
  fill = subprocess.run([sys.executable, "-c", "import datasets, sys; datasets.load_dataset(sys.argv[1], 'en', "
                         "split='train')", str(data)], capture_output=True, text=True, timeout=600,
                        env=_hf_env(tmp_path))
  assert fill.returncode == 0, fill.stderr[-2000:]
  cache = tmp_path / "hf" / "datasets"
  os.rename(cache / "tinyc4", cache / "test-org___tinyc4")
  hub = _prepare_cli(tmp_path, "hf:test-org/tinyc4:en:train", "hub")
  assert hub.returncode == 0, hub.stderr[-2000:]
  assert _bins(tmp_path / "hub") == _bins(expected.root)

  absent = _prepare_cli(tmp_path, "hf:test-org/absent:en:train", "absent")
  assert absent.returncode == 2 and "Traceback" not in absent.stderr, absent.stderr[-2000:]
  lines = absent.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), absent.stderr
  for needle in ("'test-org/absent'", "not in the datasets cache", str(cache), "--corpus=hf:/path/to/dataset_dir:en:train"):
    assert needle in lines[0], lines[0]
  assert not (tmp_path / "absent").exists()
