"""configs/prabhudesai.py (the published design) and configs/gpu_study.py (the one-GPU study): the
settings each claims, and a `scale=test` run of each on the CPU."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from configs import gpu_study, prabhudesai
from dlmscale.errors import UserError

STAND_IN_DOCS = [f"Document {i}: the quick brown fox {i % 7} jumps over {i % 5} lazy dogs. " * 12
                 for i in range(160)]


def test_prabhudesai_grid_is_the_published_recipe():
  pts = prabhudesai.sweep("scale=cluster")
  assert {p["unique_tokens"] for p in pts} == {25_000_000, 50_000_000, 100_000_000}
  for p in pts:
    assert (p["optim.lr"], p["optim.min_lr_ratio"], p["optim.warmup_frac"]) == (2e-4, 0.1, 0.01)
    assert (p["optim.weight_decay"], p["optim.schedule"], p["batch_size"]) == (0.1, "cosine", 256)
    assert (p["data.seq_len"], p["eval.mc_samples"], p["data.vocab_size"]) == (2048, 32, 0)
    assert prabhudesai.flops_6nd(p["run_name"].split("-")[1][1:], p["unique_tokens"], p["epochs"]) <= 1.5e20
  names = {p["run_name"] for p in pts}
  for obj, (size, epochs) in prabhudesai.BEST_AT_100M.items():  # the released best checkpoints
    assert f"{obj}-p{size}-u100M-e{epochs:g}-seed0" in names
  # their scripts' exact counts, named by total parameters (examples_scaling/training/TRAIN.md)
  assert prabhudesai.their_params("117M") == pytest.approx(123.6e6, rel=1e-3)
  assert prabhudesai.their_params("217M") == pytest.approx(217.5e6, rel=1e-3)
  with pytest.raises(UserError, match="corpus=PATH_OR_GLOB"):
    prabhudesai.get_config("scale=test")


def test_gpu_study_grid_fits_its_sittings():
  pts = gpu_study.sweep("scale=cluster")
  branches = [p for p in pts if p.get("branch.trunk")]
  assert {p["unique_tokens"] for p in pts} == {204_800, 1_000_000}
  assert {p["model_size"] for p in pts} == {"s3M", "s10M", "s25M"}
  assert max(p["epochs"] for p in branches if p["objective"] == "mdm") == 512
  assert max(p["epochs"] for p in branches if p["objective"] == "ar") == 64
  cfg = gpu_study.get_config("scale=cluster")
  assert (cfg.data.vocab_size, cfg.data.seq_len) == (8192, 512)
  est = gpu_study.estimate_seconds("scale=cluster")
  assert est["sittings"] * gpu_study.SITTING_S >= est["total_s"] and est["sittings"] <= 12
  assert 20 < gpu_study.law_e_crit("s10M", 1e6) < 40  # the law's crossing lies inside 1-512 epochs


def _bpe(path):
  """A small byte-level BPE tokenizer.json as GPT-2's, trained here (nothing is downloaded)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(STAND_IN_DOCS, trainers.BpeTrainer(
      vocab_size=420, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  tk.save(str(path))
  return path


@pytest.mark.slow
def test_prabhudesai_test_scale_trains_on_a_local_c4_stand_in(tmp_path):
  (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(
      gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in STAND_IN_DOCS).encode()))
  tj = _bpe(tmp_path / "tokenizer.json")
  arg = f"scale=test,corpus={tmp_path}/c4-train.*.json.gz,tokenizer={tj},objectives=mdm,epochs=1"
  proc = subprocess.run([sys.executable, "-m", "dlmscale.main", f"--config=configs/prabhudesai.py:{arg}",
                         f"--workdir={tmp_path / 'run'}", f"--config.data.cache_dir={tmp_path / 'cache'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=subprocess_env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["model"]["d_model"] == 128 and config["optim"]["lr"] == 2e-4  # their 7M, their recipe
  assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_gpu_study_test_scale_runs_its_trunks_and_branches(tiny_corpus, data_cache, tmp_path):
  cmd = [sys.executable, "-m", "launch.local", "--config=configs/gpu_study.py:scale=test",
         f"--workdir={tmp_path / 'grid'}", "--parallel=2", "--noreport", "--poll_s=0.1",
         f"--set=data.corpus={tiny_corpus}", f"--set=data.cache_dir={data_cache}"]
  out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  for p in gpu_study.sweep("scale=test"):
    assert (tmp_path / "grid" / p["run_name"] / "summary.json").exists(), p["run_name"]
