"""Corpus formats decided by content, Hugging Face tokenizers and datasets, fsspec URLs, and runs that
read only prepared data (dlmscale/data/formats.py, remote.py, hf_tokenizer.py, index.py)."""

from __future__ import annotations

import pathlib

import pytest

from dlmscale.data import corpus as corpus_lib
from dlmscale.data import pipeline

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
