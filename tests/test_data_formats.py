"""Corpus formats decided by content, Hugging Face tokenizers and datasets, fsspec URLs, and runs that
read only prepared data (dlmscale/data/formats.py, remote.py, hf_tokenizer.py, index.py)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from dlmscale.data import corpus as corpus_lib
from dlmscale.data import pipeline
from dlmscale.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]

# The default corpus prepared at a small setting (vocab 512, seq_len 128, val_fraction 0.05, seed 0)
# by main before the format and tokenizer work (commit 33aaeb6, python 3.11.7, sentencepiece 0.2.3):
# `pipeline.prepare({...}, out_dir=D)` then `sha256sum D/*.bin D/tokenizer.model`. The stdlib is
# versioned with the interpreter, so the check runs only where its files hash as they did there.
_STDLIB_CONTENT_SHA256 = "f5f03282342b8ebdf816063d336e173028cbb9ac5d14b9ae8d19ac7d46805f69"
_GOLDEN = {
    "train": "647b18649e0feeb8ea6cc79890fd5d647048cafc75bcb7b66723431b92d754f5",
    "val": "1938a2146a2aca2fa3110ba793b0c55e2558d3463abdd2f23efe79282d23fef7",
    "tokenizer": "9ba3f2b9aff9029750109f37cbc473844acf6eff85391edd4be496ade4188e48",
}


def test_default_corpus_prepares_byte_identical_to_main(tmp_path):
  if corpus_lib.content_sha256(corpus_lib.stdlib_files()) != _STDLIB_CONTENT_SHA256:
    pytest.skip("this interpreter's standard library differs from the one the golden hashes were made on")
  p = pipeline.prepare({"corpus": corpus_lib.STDLIB, "vocab_size": 512, "seq_len": 128, "val_fraction": 0.05,
                        "seed": 0, "num_workers": 2}, out_dir=tmp_path / "prepared")
  assert p.sha256s() == _GOLDEN
  from dlmscale.data import chunks
  assert chunks.file_sha256(p.root / "train.bin") == _GOLDEN["train"]
  assert chunks.file_sha256(p.root / "val.bin") == _GOLDEN["val"]


# --- helpers ------------------------------------------------------------------------------------


def _docs(n: int = 80) -> list[str]:
  """Real-looking text: slices of stdlib source, one document each."""
  import sysconfig
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  text = "".join((stdlib / name).read_text() for name in ("textwrap.py", "string.py", "heapq.py", "glob.py"))
  return [text[(i * 1700) % (len(text) - 1200):][:1200] for i in range(n)]


def _jsonl_bytes(docs: list[str], field: str = "text") -> bytes:
  return "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()


def _compress(data: bytes, how: str) -> bytes:
  if how == "gzip":
    return gzip.compress(data)
  if how == "zstd":
    import zstandard
    return zstandard.ZstdCompressor().compress(data)
  if how == "bz2":
    return bz2.compress(data)
  return lzma.compress(data)


def build_bpe(path: pathlib.Path, texts: list[str], vocab: int = 420, end_token: str | None = "<|endoftext|>"):
  """A byte-level BPE tokenizer.json as GPT-2's (trained here; nothing is downloaded)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[end_token] if end_token else [],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tk.train_from_iterator(texts, trainer)
  tk.save(str(path))
  return path


def _cfg(corpus, out_root: pathlib.Path, **kw) -> dict:
  return {"corpus": str(corpus), "vocab_size": 512, "seq_len": 32, "val_fraction": 0.1, "num_workers": 1,
          "cache_dir": str(out_root / "cache"), **kw}


def _chunks(p) -> tuple[bytes, bytes]:
  return (p.root / "train.bin").read_bytes(), (p.root / "val.bin").read_bytes()


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "dlmscale.data", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=180, env=subprocess_env())


def fails_naming(proc: subprocess.CompletedProcess, path, *needles: str) -> None:
  assert proc.returncode == 2, (proc.returncode, proc.stderr)
  assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert str(path) in proc.stderr, proc.stderr
  for needle in needles:
    assert needle in proc.stderr, proc.stderr


# --- formats ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
  root = tmp_path_factory.mktemp("plain")
  (root / "c.jsonl").write_bytes(_jsonl_bytes(_docs()))
  return pipeline.prepare(_cfg(root / "c.jsonl", root), out_dir=root / "prepared")


@pytest.mark.parametrize("how,name", [("gzip", "c4-train.00000-of-01024.json.gz"), ("gzip", "c.jsonl.gz"),
                                      ("zstd", "c.jsonl.zst"), ("bz2", "c.jsonl.bz2"), ("xz", "c.jsonl.xz")])
def test_compressed_jsonl_prepares_to_the_same_chunks(plain, tmp_path, how, name):
  (tmp_path / name).write_bytes(_compress(_jsonl_bytes(_docs()), how))
  p = pipeline.prepare(_cfg(tmp_path / name, tmp_path), out_dir=tmp_path / "prepared")
  assert _chunks(p) == _chunks(plain)
  assert p.manifest["tokenizer"]["sha256"] == plain.manifest["tokenizer"]["sha256"]


def test_compressed_text_and_saved_dataset_and_parquet(tmp_path):
  docs = _docs(40)
  (tmp_path / "t").mkdir()
  for i, d in enumerate(docs):
    (tmp_path / "t" / f"{i:02d}.txt").write_text(d)
  (tmp_path / "z").mkdir()
  for i, d in enumerate(docs):
    (tmp_path / "z" / f"{i:02d}.txt.gz").write_bytes(gzip.compress(d.encode()))
  assert list(corpus_lib.open_corpus(str(tmp_path / "z")).iter_docs()) == docs
  import datasets
  datasets.Dataset.from_dict({"text": docs, "n": list(range(40))}).save_to_disk(str(tmp_path / "saved"))
  saved = corpus_lib.open_corpus(str(tmp_path / "saved"))
  assert saved.formats == ("arrow",) * len(saved.files) and list(saved.iter_docs()) == docs
  a = pipeline.prepare(_cfg(tmp_path / "saved", tmp_path), out_dir=tmp_path / "pa")
  b = pipeline.prepare(_cfg(tmp_path / "t/*.txt", tmp_path), out_dir=tmp_path / "pb")
  assert _chunks(a) == _chunks(b) and a.manifest["documents"] == 40


def test_memory_url_corpus_prepares_and_is_cached_locally(plain, tmp_path):
  import fsspec
  fs = fsspec.filesystem("memory")
  fs.pipe("/dlmscale-test/corpus/part-0.jsonl.gz", gzip.compress(_jsonl_bytes(_docs())))
  url = "memory://dlmscale-test/corpus/*.jsonl.gz"
  p = pipeline.prepare(_cfg(url, tmp_path), out_dir=tmp_path / "prepared")
  assert _chunks(p) == _chunks(plain) and p.manifest["source"]["corpus"] == url
  assert list((tmp_path / "cache" / "fetched").rglob("part-0.jsonl.gz"))
  fs.rm("/dlmscale-test", recursive=True)


def test_hub_spec_is_parsed():
  from dlmscale.data import remote
  assert remote.parse_hf("hf:allenai/c4:en:train") == ("allenai/c4", "en", "train")
  assert remote.parse_hf("hf:roneneldan/TinyStories") == ("roneneldan/TinyStories", None, "train")
  with pytest.raises(UserError, match="hf:NAME"):
    remote.parse_hf("hf:")


# --- bad inputs: exit 2, one line naming the file, nothing written -------------------------------


def test_gzip_bytes_named_jsonl(tmp_path):
  bad = tmp_path / "c.jsonl"
  bad.write_bytes(gzip.compress(_jsonl_bytes(_docs(5))))
  fails_naming(run_cli(f"--corpus={bad}", f"--out_dir={tmp_path / 'o'}"), bad, "gzip", ".jsonl.gz")
  assert not (tmp_path / "o").exists()


def test_named_gz_but_not_gzip(tmp_path):
  bad = tmp_path / "c.jsonl.gz"
  bad.write_bytes(_jsonl_bytes(_docs(5)))
  fails_naming(run_cli(f"--corpus={bad}", f"--out_dir={tmp_path / 'o'}"), bad, "not gzip-compressed")


def test_binary_in_a_text_glob(tmp_path):
  for i, d in enumerate(_docs(5)):
    (tmp_path / f"{i}.txt").write_text(d)
  bad = tmp_path / "3.txt"
  bad.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
  fails_naming(run_cli(f"--corpus={tmp_path}/*.txt", f"--out_dir={tmp_path / 'o'}"), bad, "binary")
  assert not (tmp_path / "o").exists()


def test_row_without_the_text_field_names_file_and_line(tmp_path):
  bad = tmp_path / "c.jsonl.gz"
  rows = _jsonl_bytes(_docs(5)) + b'{"body": "no text here"}\n'
  bad.write_bytes(gzip.compress(rows))
  fails_naming(run_cli(f"--corpus={bad}", f"--out_dir={tmp_path / 'o'}"), f"{bad}:6", "no field 'text'")


def test_empty_glob(tmp_path):
  fails_naming(run_cli(f"--corpus={tmp_path}/*.jsonl.gz", f"--out_dir={tmp_path / 'o'}"),
               f"{tmp_path}/*.jsonl.gz", "no files match")


@pytest.mark.parametrize("content", [b"not a tokenizer at all\n", b'{"version": "1.0", "model": 3}',
                                     bytes(range(256))])
def test_tokenizer_file_that_is_not_a_tokenizer(tmp_path, content):
  (tmp_path / "c.jsonl").write_bytes(_jsonl_bytes(_docs(10)))
  bad = tmp_path / "tok.json"
  bad.write_bytes(content)
  fails_naming(run_cli(f"--corpus={tmp_path / 'c.jsonl'}", f"--tokenizer={bad}", "--vocab_size=0",
                       f"--out_dir={tmp_path / 'o'}"), bad, "is not a tokenizer")
  assert not (tmp_path / "o").exists()


# --- Hugging Face tokenizer.json ----------------------------------------------------------------


@pytest.mark.parametrize("end_token", ["<|endoftext|>", None])
def test_tokenizer_json_prepares_with_padded_vocab(tmp_path, end_token):
  docs = _docs()
  (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(_jsonl_bytes(docs)))
  tj = build_bpe(tmp_path / "tokenizer.json", docs, end_token=end_token)
  p = pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path, tokenizer=str(tj), vocab_size=0),
                       out_dir=tmp_path / "prepared")
  from dlmscale.data import tokenizer as tok
  t = tok.load(tj)
  pieces = t.get_piece_size()
  assert p.vocab_size % 128 == 0 and p.mask_id == p.vocab_size - 1
  assert p.eod_id == (t.tk.token_to_id(end_token) if end_token else pieces)
  assert p.manifest["vocab_padding"] == p.vocab_size - pieces - (0 if end_token else 1) - 1
  assert p.tokenizer_path.name == "tokenizer.json" and p.manifest["tokenizer"]["kind"] == "tokenizer.json"
  loaded = pipeline.load_tokenizer(p)
  assert loaded.decode(loaded.encode(docs[3])) == docs[3]
  train = np.asarray(p.train_chunks).ravel()
  assert train.max() < p.mask_id and (train == p.eod_id).any()
  with pytest.raises(UserError, match="--vocab_size=" + str(p.vocab_size)):
    pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path, tokenizer=str(tj), vocab_size=256),
                     out_dir=tmp_path / "other")


def _train_cli(workdir: pathlib.Path, cfg=None, config: str = "configs/base.py", *extra: str,
               **env: str) -> subprocess.CompletedProcess:
  """`python -m dlmscale.main` (the documented entry, whatever the package layout behind it)."""
  from conftest import config_flags_for
  flags = config_flags_for(cfg) if cfg is not None else []
  return subprocess.run([sys.executable, "-m", "dlmscale.main", f"--config={config}", f"--workdir={workdir}",
                         *flags, *extra], capture_output=True, text=True, cwd=REPO, timeout=300,
                        env=subprocess_env(**env))


def _losses(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_tokenizer_json_trains_a_few_steps(tmp_path, objective):
  from conftest import tiny_config
  docs = _docs(120)
  (tmp_path / "c.json.gz").write_bytes(gzip.compress(_jsonl_bytes(docs)))
  tj = build_bpe(tmp_path / "tokenizer.json", docs)
  cfg = tiny_config(str(tmp_path / "c.json.gz"), str(tmp_path / "cache"), objective,
                    **{"data.tokenizer": str(tj), "data.vocab_size": 0, "epochs": 1.0})
  proc = _train_cli(tmp_path / "run", cfg)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = _losses(tmp_path / "run")
  train_rows = [r for r in rows if r["split"] == "train"]
  assert len(train_rows) >= 4 and all(np.isfinite(r["loss"]) for r in rows)
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == train_rows[-1]["step"]


# --- a run reads only prepared data -------------------------------------------------------------


def test_second_prepare_reads_no_corpus_byte(tmp_path, monkeypatch):
  (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(_jsonl_bytes(_docs())))
  first = pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path))
  def no_reading(*a, **k):
    raise AssertionError("the raw corpus was read")
  monkeypatch.setattr(corpus_lib, "content_sha256", no_reading)
  monkeypatch.setattr(corpus_lib, "open_corpus", no_reading)
  again = pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path))
  assert again.root == first.root and again.sha256s() == first.sha256s()
  monkeypatch.undo()
  # Other settings on the same corpus: its content hash comes from the stat index, not from rehashing.
  monkeypatch.setattr(corpus_lib, "content_sha256", no_reading)
  other = pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path, seq_len=64))
  assert other.root != first.root
  monkeypatch.undo()
  # A changed corpus is noticed (by its stat) and prepared anew.
  (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(_jsonl_bytes(_docs()[:-3])))
  changed = pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path))
  assert changed.root != first.root and changed.manifest["documents"] == first.manifest["documents"] - 3
  # Damaged prepared files are caught by their recorded hashes.
  (tmp_path / "c.jsonl.gz").unlink()
  with open(changed.root / "val.bin", "r+b") as f:
    f.write(b"\xff\xff")
  with pytest.raises(UserError, match="val.bin does not match the sha256"):
    pipeline.prepare(_cfg(tmp_path / "c.jsonl.gz", tmp_path))


def test_raw_corpus_deleted_after_preparation_run_resumes_evaluates_and_samples(tmp_path):
  import re
  import shutil
  from conftest import tiny_config, write_tiny_corpus
  corpus = write_tiny_corpus(tmp_path / "corpus")
  cfg = tiny_config(corpus, str(tmp_path / "cache"), "mdm")
  killed = _train_cli(tmp_path / "run", cfg, DLMSCALE_FAULT="kill:8")
  assert killed.returncode == -9, killed.stderr[-2000:]
  shutil.rmtree(tmp_path / "corpus")
  resumed = _train_cli(tmp_path / "run", cfg)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert re.search(r"resuming at step (\d+)", resumed.stdout)
  for module, *args in (("dlmscale.evaluate",), ("dlmscale.sample", "--prompt=def f(", "--num_tokens=4")):
    proc = subprocess.run([sys.executable, "-m", module, f"--workdir={tmp_path / 'run'}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert proc.returncode == 0, (module, proc.stderr[-2000:])
  assert proc.stdout.startswith("def f(")


# --- configs/c4.py ------------------------------------------------------------------------------


def test_c4_config_cluster_settings_and_test_scale_run(tmp_path):
  from configs import c4
  cluster = c4.sweep("scale=cluster")
  assert {p["unique_tokens"] for p in cluster} == {25_000_000, 50_000_000, 100_000_000}
  assert all(p["data.seq_len"] == 2048 and p["data.vocab_size"] == 0 for p in cluster)
  assert cluster[0]["data.tokenizer"].endswith("tokenizer.json") and ".json.gz" in cluster[0]["data.corpus"]
  with pytest.raises(UserError, match="corpus=PATH_OR_GLOB"):
    c4.get_config("scale=test")
  docs = _docs(160)
  (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(gzip.compress(_jsonl_bytes(docs)))
  tj = build_bpe(tmp_path / "tokenizer.json", docs)
  arg = f"scale=test,corpus={tmp_path}/c4-train.*.json.gz,tokenizer={tj}"
  assert len(c4.sweep(arg)) == 4
  cfg = c4.get_config(arg)
  proc = _train_cli(tmp_path / "run", None, f"configs/c4.py:{arg}", f"--config.data.cache_dir={tmp_path / 'cache'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["steps"] == pipeline.steps_for_budget(cfg.unique_tokens, cfg.epochs, cfg.batch_size, 64)
  cfg.data.cache_dir = str(tmp_path / "cache")
  prepared = pipeline.prepare(cfg.data)
  assert prepared.vocab_size % 128 == 0 and prepared.manifest["tokenizer"]["kind"] == "tokenizer.json"


def test_index_never_returns_data_since_replaced_by_other_inputs(tmp_path):
  import shutil
  (tmp_path / "c.jsonl").write_bytes(_jsonl_bytes(_docs()))
  out = tmp_path / "prepared"
  a = pipeline.prepare(_cfg(tmp_path / "c.jsonl", tmp_path), out_dir=out)
  shutil.rmtree(out)
  b = pipeline.prepare(_cfg(tmp_path / "c.jsonl", tmp_path, seq_len=64), out_dir=out)
  assert b.seq_len == 64
  with pytest.raises(UserError, match="different inputs"):
    pipeline.prepare(_cfg(tmp_path / "c.jsonl", tmp_path), out_dir=out)
  assert a.seq_len == 32


def test_memory_url_tokenizer_json(tmp_path):
  import fsspec
  docs = _docs()
  (tmp_path / "c.jsonl.zst").write_bytes(_compress(_jsonl_bytes(docs), "zstd"))
  local = build_bpe(tmp_path / "tokenizer.json", docs)
  fsspec.filesystem("memory").pipe("/dlmscale-test-tok/tokenizer.json", local.read_bytes())
  url = "memory://dlmscale-test-tok/tokenizer.json"
  a = pipeline.prepare(_cfg(tmp_path / "c.jsonl.zst", tmp_path, tokenizer=url, vocab_size=0), out_dir=tmp_path / "a")
  b = pipeline.prepare(_cfg(tmp_path / "c.jsonl.zst", tmp_path, tokenizer=str(local), vocab_size=0),
                       out_dir=tmp_path / "b")
  assert _chunks(a) == _chunks(b) and a.tokenizer_sha256 == b.tokenizer_sha256
  fsspec.filesystem("memory").rm("/dlmscale-test-tok", recursive=True)
