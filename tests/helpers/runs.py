"""Real tiny runs for the trainer, evaluator and sampler tests: one trained in-process (and reused by
every later caller in the session), and `python -m dlmscale.main` as a subprocess, with what it left."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from conftest import config_flags_for, subprocess_env, tiny_config
from dlmscale import run_dir as rundir
from dlmscale.train import checkpoint
from dlmscale.train import loop as train

REPO = pathlib.Path(__file__).resolve().parents[2]


def trained_run(tmp_path_factory, corpus: str, cache: str, objective: str) -> pathlib.Path:
  """A finished tiny run (trained once per session; later callers reuse it)."""
  workdir = tmp_path_factory.getbasetemp() / f"eval_run_{objective}"
  if not (workdir / "summary.json").exists():
    cfg = tiny_config(corpus, cache, objective, epochs=1.0,
                      **{"checkpoint.every_steps": 100, "eval.every_steps": 100})
    train.train_and_evaluate(cfg, workdir)
  return workdir


def final_params(workdir: pathlib.Path) -> dict:
  return checkpoint.load_arrays(workdir / "checkpoints")["params"]


def losses(workdir: pathlib.Path) -> list[tuple]:
  return [(r["step"], r["split"], r["loss"]) for r in rundir.read_metrics(workdir)]


def run_main(cfg, workdir: pathlib.Path, **env) -> subprocess.CompletedProcess:
  """`python -m dlmscale.main` on configs/base.py with the overrides that make it `cfg`."""
  cmd = [sys.executable, "-m", "dlmscale.main", "--config=configs/base.py", f"--workdir={workdir}",
         *config_flags_for(cfg)]
  return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(**env), cwd=REPO, timeout=300)
