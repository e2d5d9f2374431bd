"""`python -m dlmscale.data`: prepares on its own; bad input gives one clear line and exit 2, no traceback."""

from __future__ import annotations

import json
import pathlib
import random
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "dlmscale.data", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


def fails(proc: subprocess.CompletedProcess, *needles: str) -> None:
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
  assert len(proc.stderr.strip().splitlines()) == 1
  for needle in needles:
    assert needle in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli") / "corpus"
  root.mkdir()
  for i in range(40):
    (root / f"{i:02d}.txt").write_text(f"doc{i} " + " ".join(["alpha beta gamma delta"] * (5 + i)) + "\n")
  return root


@pytest.fixture(scope="module")
def prepared_dir(texts):
  out = texts.parent / "prepared"
  proc = run(f"--corpus={texts}", f"--out_dir={out}", "--vocab_size=300", "--seq_len=32")
  assert proc.returncode == 0, proc.stderr
  assert f"prepared data: {out}" in proc.stdout and "vocab_size=300" in proc.stdout
  assert "train: 38 documents" in proc.stdout and "val: 2 documents" in proc.stdout
  return out


def test_prepares_and_reuses(prepared_dir, texts):
  manifest = json.loads((prepared_dir / "manifest.json").read_text())
  assert manifest["vocab_size"] == 300 and manifest["seq_len"] == 32
  again = run(f"--corpus={texts}", f"--out_dir={prepared_dir}", "--vocab_size=300", "--seq_len=32")
  assert again.returncode == 0 and json.loads((prepared_dir / "manifest.json").read_text()) == manifest


def test_refuses_to_overwrite_other_inputs(prepared_dir, texts):
  proc = run(f"--corpus={texts}", f"--out_dir={prepared_dir}", "--vocab_size=300", "--seq_len=64")
  fails(proc, "different inputs", "seq_len: 32 -> 64", "another --out_dir", "delete")


def test_missing_path(tmp_path):
  fails(run(f"--corpus={tmp_path / 'nope'}", f"--out_dir={tmp_path / 'o'}"), "does not exist")


def test_empty_corpus(tmp_path):
  (tmp_path / "empty").mkdir()
  fails(run(f"--corpus={tmp_path / 'empty'}", f"--out_dir={tmp_path / 'o'}"), "empty")
  (tmp_path / "blank.txt").write_text("  \n\n")
  fails(run(f"--corpus={tmp_path / 'blank.txt'}", f"--out_dir={tmp_path / 'o'}"), "is empty")
  assert not (tmp_path / "o").exists()  # nothing half-written is left behind


def test_jsonl_and_parquet_without_the_field(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  (tmp_path / "d.jsonl").write_text(json.dumps({"title": "t", "content": "some text"}) + "\n")
  pq.write_table(pa.table({"title": ["t"], "content": ["some text"]}), tmp_path / "d.parquet")
  for name in ("d.jsonl", "d.parquet"):
    fails(run(f"--corpus={tmp_path / name}", f"--out_dir={tmp_path / 'o'}"),
          "no field 'text'", "fields present: title, content", "--text_field")


def test_tokenizer_vocabulary_must_match(prepared_dir, texts, tmp_path):
  proc = run(f"--corpus={texts}", f"--out_dir={tmp_path / 'o'}", f"--tokenizer={prepared_dir / 'tokenizer.model'}",
             "--vocab_size=2048", "--seq_len=32")
  fails(proc, "299 pieces", "vocab_size=2048", "--vocab_size=300")
  fails(run(f"--corpus={texts}", f"--tokenizer={tmp_path / 'none.model'}", f"--out_dir={tmp_path / 'o'}"),
        "does not exist")


def test_infeasible_vocab_and_split(texts, tmp_path):
  fails(run(f"--corpus={texts}", f"--out_dir={tmp_path / 'o'}", "--vocab_size=4096", "--seq_len=32"),
        "too large", "vocab_size <=")
  fails(run(f"--corpus={texts}", f"--out_dir={tmp_path / 'o'}", "--vocab_size=300", "--val_fraction=1.5"),
        "val_fraction")


def test_same_tokenizer_in_any_process_and_thread_count(tmp_path):
  # More one-line documents than the tokenizer's sentence sample, so the sampling is exercised.
  r = random.Random(0)
  vocab = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 7))) for _ in range(300)]
  lines = [f"{i} " + " ".join(r.choice(vocab) for _ in range(8)) for i in range(7000)]
  (tmp_path / "lines.txt").write_text("\n".join(lines))
  shas = []
  for workers in (1, 2):
    out = tmp_path / f"out{workers}"
    proc = run(f"--corpus={tmp_path / 'lines.txt'}", "--doc_separator=\\n", f"--out_dir={out}",
               "--vocab_size=320", "--seq_len=32", f"--num_workers={workers}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["documents"] == 7000
    shas.append((m["tokenizer"]["sha256"], m["splits"]["train"]["sha256"]))
  assert shas[0] == shas[1]
