"""Shared fixtures: a tiny text corpus and a tiny run config, so trainer tests take seconds."""

from __future__ import annotations

import os
import pathlib
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Most test time is XLA compilation of the same small programs, in this process and in the trainer
# subprocesses the tests start: one persistent compilation cache per test session serves them all.
# (Set before JAX is imported; subprocesses inherit it through the environment.)
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlmscale-jax-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_sessionfinish(session, exitstatus) -> None:
  del session, exitstatus
  if _OWN_CACHE:
    import shutil
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def write_tiny_corpus(root: pathlib.Path, n_docs: int = 60, doc_chars: int = 3000) -> str:
  """Documents cut from real stdlib source, written as one .txt per document; returns a glob."""
  root.mkdir(parents=True, exist_ok=True)
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  text = "".join((stdlib / name).read_text() for name in
                 ("json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "bisect.py",
                  "heapq.py", "fnmatch.py", "glob.py", "shlex.py", "calendar.py"))
  for i in range(n_docs):
    start = (i * doc_chars * 7) % max(len(text) - doc_chars, 1)
    (root / f"doc{i:03d}.txt").write_text(text[start:start + doc_chars])
  return str(root / "*.txt")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
  return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("data_cache"))


def tiny_config(corpus: str, cache_dir: str, objective: str = "ar", **overrides):
  """A model of ~30k parameters on 32-token sequences: a whole run takes a few seconds."""
  from configs import base
  c = base.get_config()
  c.objective = objective
  c.model_size = "custom"
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.d_ff = 32, 2, 2, 64
  c.data.corpus, c.data.cache_dir = corpus, cache_dir
  c.data.vocab_size, c.data.seq_len, c.data.val_fraction = 384, 32, 0.15
  c.batch_size, c.unique_tokens, c.epochs = 8, 8 * 32 * 4, 3.0
  c.optim.lr, c.optim.warmup_steps = 1e-2, 2
  c.eval.every_steps, c.eval.num_sequences, c.eval.batch_size, c.eval.mc_samples = 4, 16, 8, 2
  c.checkpoint.every_steps, c.log_every_steps = 3, 1
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def config_flags_for(c) -> list[str]:
  """The command-line overrides that reproduce `c` from configs/base.py (for subprocess runs)."""
  from configs import base
  from dlmscale import run_dir as rundir
  import json
  ref = rundir.flatten(json.loads(base.get_config().to_json_best_effort()))
  new = rundir.flatten(json.loads(c.to_json_best_effort()))
  return [f"--config.{k}={v}" for k, v in new.items() if ref.get(k) != v]


def subprocess_env(**extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env
