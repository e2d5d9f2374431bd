"""The bad-input table: every command, fed what a hostile or hurried user types, answers with exit 2
and one `error: ...` line naming the problem (and the needle words that say how to fix it), never
a traceback, and leaves every file it was pointed at byte-identical (a workdir that did not exist
still does not).

All cases run in one batch (tests/bad_input_runner.py forks a fresh process per case from one
interpreter that has the libraries imported), so the table costs seconds, not minutes.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

from conftest import config_flags_for, subprocess_env, tiny_config
from helpers.users import open_directory, unprivileged_ids

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNNER = pathlib.Path(__file__).with_name("bad_input_runner.py")


class Case(NamedTuple):
  id: str
  module: str
  argv: tuple  # may hold {placeholders} filled from the fixtures' paths
  needles: tuple = ()
  watch: tuple = ()  # placeholders of paths that must be unchanged
  unprivileged: bool = False
  env: tuple = ()  # (name, value) pairs set for the command; values may hold placeholders


def _main(id, *argv, needles=(), watch=("{new}",), unprivileged=False, tiny=True, env=()) -> Case:
  base = ("--config=configs/base.py", "{tiny}") if tiny else ()
  has_workdir = any(str(a).startswith("--workdir") for a in argv)
  return Case(f"main-{id}", "dlmscale.main",
              (*base, *(() if has_workdir else ("--workdir={new}",)), *argv), needles, watch,
              unprivileged, env)


def _c(module, id, *argv, needles=(), watch=(), unprivileged=False, env=()) -> Case:
  return Case(f"{module.split('.')[-1]}-{id}", module, argv, needles, watch, unprivileged, env)


CASES = [
    # --- dlmscale.main: flags and the config file ---
    Case("main-no-args", "dlmscale.main", (), ("--config",)),
    Case("main-workdir-only", "dlmscale.main", ("--workdir={new}",), ("--config",), ("{new}",)),
    Case("main-config-only", "dlmscale.main", ("--config=configs/base.py",), ("--workdir",)),
    _main("config-missing-file", "--config=configs/nope.py", needles=("configs/nope.py", "does not exist"), tiny=False),
    _main("config-not-python", "--config=README.md", needles=("README.md", "not a Python config"), tiny=False),
    _main("config-is-directory", "--config=configs", needles=("configs", "not a Python config"), tiny=False),
    _main("config-without-get-config", "--config=configs/__init__.py", needles=("get_config",), tiny=False),
    _main("config-syntax-error", "--config={broken_py}", needles=("not a valid Python file", "line"), tiny=False),
    _main("grid-argument-unknown", "--config=configs/quickstart.py:objective=xyz", needles=("objective=xyz",), tiny=False),
    _main("grid-argument-bad-value", "--config=configs/datacons.py:scale=galaxy", needles=("galaxy",), tiny=False),
    _main("unknown-top-key", "--config.lerning_rate=1", needles=("unknown config key", "lerning_rate")),
    _main("unknown-nested-key", "--config.optim.lerning_rate=1", needles=("unknown config key", "optim.lr")),
    _main("unknown-section", "--config.optimizer.lr=1", needles=("unknown config key", "optimizer")),
    _main("key-not-a-float", "--config.optim.lr=abc", needles=("optim.lr", "abc")),
    _main("key-not-an-int", "--config.seed=1.5", needles=("seed", "1.5")),
    _main("section-given-a-value", "--config.optim=3", needles=("optim",)),
    _main("key-without-value", "--config.objective", needles=("config.objective",)),
    _main("workdir-without-value", "--workdir", needles=("--workdir",), watch=()),
    _main("stray-positional", "stray", needles=("stray",)),
    _main("boolean-space-form", "--config.tensorboard", "false", needles=("--config.tensorboard=false",)),
    _main("unknown-flag", "--bogus=1", needles=("bogus",)),
    _main("single-dash-typo", "-workdirr=x", needles=("workdirr",)),
    # --- dlmscale.main: values out of range (checked before anything is written) ---
    _main("objective", "--config.objective=gpt", needles=("objective", "gpt")),
    _main("unique-tokens-zero", "--config.unique_tokens=0", needles=("unique_tokens",)),
    _main("unique-tokens-negative", "--config.unique_tokens=-5", needles=("unique_tokens",)),
    _main("epochs-zero", "--config.epochs=0.0", needles=("epochs",)),
    _main("epochs-negative", "--config.epochs=-1.0", needles=("epochs",)),
    _main("epochs-nan", "--config.epochs=nan", needles=("epochs", "nan")),
    _main("epochs-inf", "--config.epochs=inf", needles=("epochs", "inf")),
    _main("batch-zero", "--config.batch_size=0", needles=("batch_size",)),
    _main("batch-negative", "--config.batch_size=-1", needles=("batch_size",)),
    _main("seq-len-one", "--config.data.seq_len=1", needles=("seq_len",)),
    _main("seq-len-zero", "--config.data.seq_len=0", needles=("seq_len",)),
    _main("seq-len-huge", "--config.data.seq_len=1000000", needles=("seq_len=1000000", "one batch")),
    _main("seq-len-exponent", "--config.data.seq_len=1e6", needles=("seq_len", "1e6")),
    _main("lr-nan", "--config.optim.lr=nan", needles=("optim.lr", "nan")),
    _main("lr-zero", "--config.optim.lr=0.0", needles=("optim.lr",)),
    _main("lr-negative", "--config.optim.lr=-0.1", needles=("optim.lr",)),
    _main("lr-inf", "--config.optim.lr=inf", needles=("optim.lr",)),
    _main("warmup-frac-two", "--config.optim.warmup_frac=2.0", needles=("warmup_frac", "[0, 1]")),
    _main("warmup-frac-negative", "--config.optim.warmup_frac=-0.1", needles=("warmup_frac",)),
    _main("warmup-steps-negative", "--config.optim.warmup_steps=-3", needles=("warmup_steps",)),
    _main("min-lr-ratio", "--config.optim.min_lr_ratio=1.5", needles=("min_lr_ratio",)),
    _main("decay-frac", "--config.optim.decay_frac=-1.0", needles=("decay_frac",)),
    _main("b1-one", "--config.optim.b1=1.0", needles=("b1",)),
    _main("b2-negative", "--config.optim.b2=-0.5", needles=("b2",)),
    _main("eps-zero", "--config.optim.eps=0.0", needles=("eps",)),
    _main("weight-decay-negative", "--config.optim.weight_decay=-1.0", needles=("weight_decay",)),
    _main("grad-clip-negative", "--config.optim.grad_clip=-1.0", needles=("grad_clip",)),
    _main("grad-clip-nan", "--config.optim.grad_clip=nan", needles=("grad_clip",)),
    _main("schedule-unknown", "--config.optim.schedule=linear", needles=("optim.schedule", "cosine")),
    _main("keep-negative", "--config.checkpoint.keep=-1", needles=("checkpoint.keep",)),
    _main("keep-zero", "--config.checkpoint.keep=0", needles=("checkpoint.keep",)),
    _main("checkpoint-every-zero", "--config.checkpoint.every_steps=0", needles=("checkpoint.every_steps",)),
    _main("eval-every-zero", "--config.eval.every_steps=0", needles=("eval.every_steps",)),
    _main("eval-sequences-zero", "--config.eval.num_sequences=0", needles=("eval.num_sequences",)),
    _main("eval-sequences-too-many", "--config.eval.num_sequences=100000", needles=("eval.num_sequences", "validation")),
    _main("eval-set-unknown", "--config.eval.set=test", needles=("eval.set", "tune")),
    _main("eval-batch-zero", "--config.eval.batch_size=0", needles=("eval.batch_size",)),
    _main("mc-samples-zero", "--config.eval.mc_samples=0", needles=("eval.mc_samples",)),
    _main("task-every-negative", "--config.eval.task_every=-1", needles=("eval.task_every", ">= 0")),
    _main("task-every-not-an-int", "--config.eval.task_every=1.5", needles=("task_every", "1.5")),
    _main("log-every-zero", "--config.log_every_steps=0", needles=("log_every_steps",)),
    _main("seed-negative", "--config.seed=-1", needles=("seed",)),
    _main("t-min-zero", "--config.mdm.t_min=0.0", needles=("t_min",)),
    _main("t-min-above-one", "--config.mdm.t_min=1.5", needles=("t_min",)),
    _main("mdm-schedule", "--config.objective=mdm", "--config.mdm.schedule=bogus", needles=("bogus",)),
    _main("model-size", "--config.model_size=s7X", needles=("s7X", "s1M")),
    _main("model-heads", "--config.model.n_heads=3", needles=("n_heads",)),
    _main("model-dtype", "--config.model.dtype=float8", needles=("float8",)),
    _main("model-remat", "--config.model.remat=bogus", needles=("remat",)),
    _main("model-attention", "--config.model.attention=bogus", needles=("attention",)),
    _main("mesh-does-not-tile", "--config.mesh.data=3", needles=("mesh",)),
    _main("mesh-two-rests", "--config.mesh.fsdp=-1", needles=("mesh",)),
    _main("mesh-zero", "--config.mesh.fsdp=0", needles=("mesh",)),
    _main("corpus-missing", "--config.data.corpus=/nonexistent/corpus/*.txt", needles=("/nonexistent",)),
    _main("vocab-one", "--config.data.vocab_size=1", needles=("vocab_size",)),
    _main("format-unknown", "--config.data.format=xml", needles=("xml",)),
    _main("val-fraction", "--config.data.val_fraction=1.5", needles=("val_fraction",)),
    _main("tokenizer-missing", "--config.data.tokenizer=/nonexistent.model", needles=("/nonexistent.model",)),
    _main("budget-beyond-corpus", "--config.unique_tokens=1000000000", needles=("unique_tokens", "training split")),
    _main("estimator-unknown", "--config.objective=mdm", "--config.eval.mdm_estimator=bogus",
          needles=("bogus",)),
    # --- dlmscale.main: the workdir ---
    _main("workdir-is-a-file", "--workdir={a_file}", needles=("is a file",), watch=("{a_file}",)),
    _main("workdir-under-a-file", "--workdir={a_file}/run", needles=("is a file",), watch=("{a_file}",)),
    _main("workdir-read-only", "--workdir={read_only}/run", needles=("not writable",), watch=("{read_only}",),
          unprivileged=True),
    # an unwritable data cache where the data must be prepared: the user's corpus, a workdir the
    # user may create, the cache theirs to read only; nothing is written, the workdir included
    _main("cache-read-only", "--workdir={open_runs}/run", "--config.data.corpus={open_corpus}",
          "--config.data.cache_dir=", env=(("DLMSCALE_CACHE", "{read_only_cache}"),),
          needles=("cache_read_only ($DLMSCALE_CACHE)", "not writable", "a directory you can write"),
          watch=("{open_runs}", "{read_only_cache}"), unprivileged=True),
    _main("workdir-other-config", "--workdir={run}", "--config.optim.lr=0.005",
          needles=("different config", "optim.lr", "new --workdir"), watch=("{run}",)),
    _main("workdir-other-config-and-bad-key", "--workdir={run}", "--config.optim.lerning_rate=1",
          needles=("unknown config key",), watch=("{run}",)),
    _main("workdir-other-data", "--workdir={run_other_data}", needles=("other data", "--allow_new_data"),
          watch=("{run_other_data}",)),
    _main("workdir-damaged-config-json", "--workdir={run_bad_config}", needles=("config.json", "not valid JSON"),
          watch=("{run_bad_config}",)),
    # --- dlmscale.data ---
    _c("dlmscale.data", "unknown-flag", "--bogus=1", needles=("bogus",)),
    _c("dlmscale.data", "stray-positional", "stray", needles=("stray",)),
    _c("dlmscale.data", "seq-len-text", "--seq_len=abc", needles=("seq_len",)),
    _c("dlmscale.data", "seq-len-one", "--corpus={corpus}", "--out_dir={new}", "--seq_len=1",
       needles=("seq_len",), watch=("{new}",)),
    _c("dlmscale.data", "vocab-one", "--corpus={corpus}", "--out_dir={new}", "--vocab_size=1",
       needles=("vocab_size",), watch=("{new}",)),
    _c("dlmscale.data", "corpus-missing", "--corpus=/nonexistent/x.txt", "--out_dir={new}",
       needles=("/nonexistent",), watch=("{new}",)),
    _c("dlmscale.data", "format-unknown", "--format=xml", needles=("format",)),
    _c("dlmscale.data", "val-fraction", "--corpus={corpus}", "--out_dir={new}", "--val_fraction=1.5",
       needles=("val_fraction",), watch=("{new}",)),
    _c("dlmscale.data", "tokenizer-missing", "--corpus={corpus}", "--out_dir={new}",
       "--tokenizer=/nonexistent.model", needles=("/nonexistent.model",), watch=("{new}",)),
    _c("dlmscale.data", "out-dir-is-a-file", "--corpus={corpus}", "--out_dir={a_file}",
       needles=("not a directory",), watch=("{a_file}",)),
    _c("dlmscale.data", "out-dir-not-empty", "--corpus={corpus}", "--out_dir={run}",
       needles=("not empty",), watch=("{run}",)),
    _c("dlmscale.data", "seed-negative", "--corpus={corpus}", "--out_dir={new}", "--seed=-1",
       needles=("seed",), watch=("{new}",)),
    _c("dlmscale.data", "val-tokens-negative", "--corpus={corpus}", "--out_dir={new}", "--val_tokens=-5",
       needles=("val_tokens",), watch=("{new}",)),
    _c("dlmscale.data", "cache-read-only", "--corpus={open_corpus}", "--vocab_size=384", "--seq_len=32",
       "--cache_dir={read_only_cache}", needles=("cache_read_only (data.cache_dir)", "not writable"),
       watch=("{read_only_cache}",), unprivileged=True),
    # --- dlmscale.evaluate ---
    _c("dlmscale.evaluate", "no-args", needles=("--workdir",)),
    _c("dlmscale.evaluate", "workdir-missing", "--workdir={new}", needles=("does not exist",), watch=("{new}",)),
    _c("dlmscale.evaluate", "workdir-empty", "--workdir={empty}", needles=("config.json",), watch=("{empty}",)),
    _c("dlmscale.evaluate", "config-json-damaged", "--workdir={run_bad_config}", needles=("not valid JSON",),
       watch=("{run_bad_config}",)),
    _c("dlmscale.evaluate", "config-json-binary", "--workdir={run_binary_config}", needles=("config.json",),
       watch=("{run_binary_config}",)),
    _c("dlmscale.evaluate", "no-checkpoint", "--workdir={config_only}", needles=("no checkpoint",),
       watch=("{config_only}",)),
    _c("dlmscale.evaluate", "unknown-flag", "--workdir={run}", "--bogus=1", needles=("bogus",), watch=("{run}",)),
    _c("dlmscale.evaluate", "stray-positional", "--workdir={run}", "stray", needles=("stray",), watch=("{run}",)),
    _c("dlmscale.evaluate", "mc-samples-text", "--workdir={run}", "--mc_samples=abc", needles=("mc_samples",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "mc-samples-zero", "--workdir={run}", "--mc_samples=0", needles=("mc_samples",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "mc-items-zero", "--workdir={run}", "--mc_items=0", needles=("mc_items",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "mc-method-for-ar", "--workdir={run}", "--mc_method=chain", needles=("mc_method",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "mc-estimator", "--workdir={run}", "--mc_estimator=bogus", needles=("mc_estimator",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "task-missing", "--workdir={run}", "--task=/nonexistent.jsonl",
       needles=("/nonexistent.jsonl",), watch=("{run}",)),
    _c("dlmscale.evaluate", "task-malformed", "--workdir={run}", "--task={bad_task}", needles=("line 1",),
       watch=("{run}",)),
    _c("dlmscale.evaluate", "task-binary", "--workdir={run}", "--task={random_bytes}", needles=("task",),
       watch=("{run}",)),
    # --- dlmscale.sample ---
    _c("dlmscale.sample", "no-args", needles=("--workdir",)),
    _c("dlmscale.sample", "workdir-missing", "--workdir={new}", needles=("does not exist",), watch=("{new}",)),
    _c("dlmscale.sample", "unknown-flag", "--workdir={run}", "--bogus=1", needles=("bogus",), watch=("{run}",)),
    _c("dlmscale.sample", "stray-positional", "--workdir={run}", "hello", needles=("hello",), watch=("{run}",)),
    _c("dlmscale.sample", "method", "--workdir={run}", "--method=bogus", needles=("method",), watch=("{run}",)),
    _c("dlmscale.sample", "num-tokens-text", "--workdir={run}", "--num_tokens=abc", needles=("num_tokens",),
       watch=("{run}",)),
    _c("dlmscale.sample", "num-tokens-zero", "--workdir={run}", "--num_tokens=0", needles=("num_tokens",),
       watch=("{run}",)),
    _c("dlmscale.sample", "num-tokens-too-many", "--workdir={run}", "--num_tokens=100000",
       needles=("num_tokens",), watch=("{run}",)),
    _c("dlmscale.sample", "temperature-negative", "--workdir={run}", "--temperature=-1", needles=("temperature",),
       watch=("{run}",)),
    _c("dlmscale.sample", "top-k-negative", "--workdir={run}", "--top_k=-1", needles=("top_k",), watch=("{run}",)),
    _c("dlmscale.sample", "top-p-above-one", "--workdir={run}", "--top_p=2", needles=("top_p",), watch=("{run}",)),
    _c("dlmscale.sample", "no-checkpoint", "--workdir={config_only}", needles=("no checkpoint",),
       watch=("{config_only}",)),
    # --- launch.local ---
    _c("launch.local", "no-args", needles=("--config", "--workdir")),
    _c("launch.local", "config-missing-file", "--config=configs/nope.py", "--workdir={new}",
       needles=("nope.py",), watch=("{new}",)),
    _c("launch.local", "config-without-sweep", "--config=configs/base.py", "--workdir={new}",
       needles=("sweep",), watch=("{new}",)),
    _c("launch.local", "grid-argument", "--config=configs/quickstart.py:bogus=1", "--workdir={new}",
       needles=("bogus",), watch=("{new}",)),
    _c("launch.local", "parallel-zero", "--config=configs/quickstart.py", "--workdir={new}", "--parallel=0",
       needles=("--parallel",), watch=("{new}",)),
    _c("launch.local", "parallel-too-many", "--config=configs/quickstart.py", "--workdir={new}",
       "--parallel=4096", needles=("--parallel",), watch=("{new}",)),
    _c("launch.local", "parallel-text", "--config=configs/quickstart.py", "--workdir={new}", "--parallel=two",
       needles=("--parallel",), watch=("{new}",)),
    _c("launch.local", "set-without-equals", "--config=configs/quickstart.py", "--workdir={new}",
       "--set", "epochs", needles=("epochs",), watch=("{new}",)),
    _c("launch.local", "set-unknown-key", "--config=configs/quickstart.py", "--workdir={new}",
       "--set", "optim.lerning_rate=1", needles=("lerning_rate",), watch=("{new}",)),
    _c("launch.local", "only-matches-nothing", "--config=configs/quickstart.py", "--workdir={new}",
       "--only=zzz*", needles=("zzz",), watch=("{new}",)),
    _c("launch.local", "workdir-is-a-file", "--config=configs/quickstart.py", "--workdir={a_file}",
       needles=("is a file",), watch=("{a_file}",)),
    _c("launch.local", "workdir-under-a-file", "--config=configs/quickstart.py", "--workdir={a_file}/grid",
       needles=("is a file",), watch=("{a_file}",)),
    _c("launch.local", "workdir-read-only", "--config=configs/quickstart.py", "--workdir={read_only}/grid",
       needles=("not writable",), watch=("{read_only}",), unprivileged=True),
    _c("launch.local", "unknown-flag", "--config=configs/quickstart.py", "--workdir={new}", "--bogus",
       needles=("--bogus",), watch=("{new}",)),
    _c("launch.local", "stray-positional", "--config=configs/quickstart.py", "--workdir={new}", "stray",
       needles=("stray",), watch=("{new}",)),
    _c("launch.local", "retries-text", "--config=configs/quickstart.py", "--workdir={new}", "--retries=x",
       needles=("--retries",), watch=("{new}",)),
    _c("launch.local", "stack-text", "--config=configs/quickstart.py", "--workdir={new}", "--stack=many",
       needles=("--stack", "'many'", "auto"), watch=("{new}",)),
    _c("launch.local", "stack-zero", "--config=configs/quickstart.py", "--workdir={new}", "--stack=0",
       needles=("--stack", "'0'", "1 or more", "auto"), watch=("{new}",)),
    # --- launch.train_stack ---
    _c("launch.train_stack", "stack-text", "--config=configs/quickstart.py", "--workdir={new}",
       "--stack=fit", needles=("--stack", "'fit'", "auto"), watch=("{new}",)),
    _c("launch.train_stack", "stack-negative", "--config=configs/quickstart.py", "--workdir={new}",
       "--stack=-4", needles=("--stack", "'-4'", "1 or more"), watch=("{new}",)),
    # --- launch.manifest, launch.slurm, launch.tpu ---
    _c("launch.manifest", "no-args", needles=("--workdir",)),
    _c("launch.manifest", "bad-mark", "--workdir={new}", "--mark=noequals", needles=("--mark",), watch=("{new}",)),
    _c("launch.slurm", "no-args", needles=("--config",)),
    _c("launch.slurm", "nodes-text", "--config=configs/quickstart.py", "--workdir={new}", "--nodes=x",
       needles=("--nodes",), watch=("{new}",)),
    _c("launch.tpu", "no-args", needles=("--config",)),
    _c("launch.tpu", "relative-workdir", "--config=configs/quickstart.py", "--workdir=runs/x", "--tpu=t",
       "--zone=z", "--dry_run", needles=("absolute path",)),
    # --- analysis.report ---
    _c("analysis.report", "no-args", needles=("--out",)),
    _c("analysis.report", "runs-missing", "--runs={new}", "--out={new_out}", needles=("does not exist",),
       watch=("{new}", "{new_out}")),
    _c("analysis.report", "runs-empty", "--runs={empty}", "--out={new_out}", needles=("no finished run",),
       watch=("{empty}", "{new_out}")),
    _c("analysis.report", "metrics-random-bytes", "--runs={grid_random_bytes}", "--out={new_out}",
       needles=("no finished run",), watch=("{grid_random_bytes}", "{new_out}")),
    _c("analysis.report", "n-boot-negative", "--runs={empty}", "--out={new_out}", "--n_boot=-1",
       needles=("--n_boot",), watch=("{empty}", "{new_out}")),
    _c("analysis.report", "grid-choice", "--runs={empty}", "--out={new_out}", "--grid=bogus",
       needles=("--grid",), watch=("{new_out}",)),
    _c("analysis.report", "params-choice", "--runs={empty}", "--out={new_out}", "--params=bogus",
       needles=("--params",), watch=("{new_out}",)),
    _c("analysis.report", "unknown-flag", "--runs={empty}", "--out={new_out}", "--bogus",
       needles=("--bogus",), watch=("{new_out}",)),
    # --- analysis.fit ---
    _c("analysis.fit", "no-args", needles=("--law",)),
    _c("analysis.fit", "law-choice", "--law=bogus", "--csv={a_file}", needles=("--law",)),
    _c("analysis.fit", "csv-missing", "--law=chinchilla", "--csv=/nonexistent.csv", needles=("/nonexistent.csv",)),
    _c("analysis.fit", "bootstrap-negative", "--law=chinchilla", "--csv={a_file}", "--bootstrap=-1",
       needles=("--bootstrap",)),
    _c("analysis.fit", "csv-random-bytes", "--law=chinchilla", "--csv={random_bytes}", needles=("CSV",)),
    _c("analysis.fit", "csv-missing-column", "--law=chinchilla", "--csv={small_csv}", "--n_col=nope",
       needles=("nope",)),
]


@pytest.fixture(scope="module")
def paths(tiny_corpus, data_cache, tmp_path_factory) -> dict[str, str]:
  """Everything the table points at: a finished tiny run and assorted damaged inputs."""
  from dlmscale.train import loop as train
  root = tmp_path_factory.mktemp("bad_inputs")
  open_root = open_directory("dlmscale-bad-inputs-")  # the unprivileged cases' paths: enterable
  cfg = tiny_config(tiny_corpus, data_cache, "ar", epochs=1.0)
  run = root / "run"
  train.train_and_evaluate(cfg, run)
  p = {"tiny": json.dumps(config_flags_for(cfg)), "run": run, "new": root / "does-not-exist",
       "new_out": root / "out-does-not-exist", "empty": root / "empty", "a_file": root / "a_file.txt",
       "read_only": open_root / "read_only", "corpus": tiny_corpus, "broken_py": root / "broken.py",
       "bad_task": root / "bad_task.jsonl", "random_bytes": root / "random.bin",
       "small_csv": root / "small.csv", "config_only": root / "config_only",
       "run_bad_config": root / "run_bad_config", "run_binary_config": root / "run_binary_config",
       "run_other_data": root / "run_other_data", "grid_random_bytes": root / "grid_random_bytes",
       "open_runs": open_root / "runs", "read_only_cache": open_root / "cache_read_only"}
  shutil.copytree(pathlib.Path(tiny_corpus).parent, open_root / "corpus")
  (open_root / "corpus").chmod(0o755)  # readable by anyone (pytest's directories are root's alone)
  p["open_corpus"] = open_root / "corpus" / pathlib.Path(tiny_corpus).name
  p["open_runs"].mkdir()
  p["open_runs"].chmod(0o777)  # anyone may create a workdir here
  p["read_only_cache"].mkdir()
  p["read_only_cache"].chmod(0o555)
  p["empty"].mkdir()
  p["a_file"].write_text("not a directory\n")
  p["read_only"].mkdir()
  p["read_only"].chmod(0o555)
  p["broken_py"].write_text("def get_config(:\n")
  p["bad_task"].write_text("{not json\n")
  p["random_bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
  p["small_csv"].write_text("N_params,D_tokens,loss\n1,2,3\n")
  p["config_only"].mkdir()
  shutil.copy(run / "config.json", p["config_only"] / "config.json")
  for name, content in (("run_bad_config", b"{half a config"), ("run_binary_config", None)):
    shutil.copytree(run, p[name])
    (p[name] / "config.json").write_bytes(content or np.random.default_rng(1).bytes(512))
  shutil.copytree(run, p["run_other_data"])
  stored = json.loads((run / "config.json").read_text())
  stored["data_sha256"]["train"] = "0" * 64  # as if the corpus changed since this run trained
  (p["run_other_data"] / "config.json").write_text(json.dumps(stored))
  (p["grid_random_bytes"] / "run1").mkdir(parents=True)
  (p["grid_random_bytes"] / "run1" / "metrics.jsonl").write_bytes(np.random.default_rng(2).bytes(3000))
  yield {k: str(v) for k, v in p.items()}
  p["read_only"].chmod(0o755)
  p["read_only_cache"].chmod(0o755)
  shutil.rmtree(open_root, ignore_errors=True)


def _expand(arg: str, paths: dict[str, str]) -> list[str]:
  if arg == "{tiny}":
    return json.loads(paths["tiny"])
  return [arg.format(**paths)]


# --- every command that takes --config, enumerated from the source, fed the same bad config files ---

# What each such command needs besides --config to reach its config check, and whether the file must
# be a grid (with sweep()). A command that takes --config and is missing here fails
# test_every_config_command_is_in_the_table: the table grows with the commands, by construction.
CONFIG_COMMANDS = {
    "dlmscale.commands.train": (("--workdir={new}",), False),
    "launch.local": (("--workdir={new}",), True),
    "launch.slurm": (("--workdir={new}",), True),
    "launch.tpu": (("--workdir={new}", "--tpu=t", "--zone=z"), True),
    "launch.aot": (("--topology=v5e:2x2",), True),
    "launch.train_stack": (("--workdir={new}",), True),
}
CONFIG_FILE_CASES = [  # (id, --config value, needles); {path} is the file as given
    ("config-missing-file", "configs/nope.py", ("configs/nope.py", "does not exist")),
    ("config-not-python", "README.md", ("README.md", "not a Python config")),
    ("config-is-directory", "configs", ("configs", "is a directory")),
    ("config-without-get-config", "configs/__init__.py", ("get_config",)),
    ("config-syntax-error", "{broken_py}", ("not a valid Python file", "line")),
    ("config-argument-refused", "configs/quickstart.py:bogus=1", ("bogus",)),
]


def config_commands() -> set[str]:
  """Every entry module (a `__main__` block) that defines a --config flag."""
  found = set()
  for package in ("dlmscale", "launch", "analysis"):
    for path in (ROOT / package).rglob("*.py"):
      src = path.read_text()
      if 'if __name__ == "__main__"' in src and re.search(
          r'add_argument\(\s*"--config"|DEFINE_config_file\(\s*"config"', src):
        found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
  return found


def _config_cases() -> list[Case]:
  cases = []
  for module, (extra, grid) in CONFIG_COMMANDS.items():
    short = module.split(".")[-1]
    for id_, value, needles in CONFIG_FILE_CASES:
      cases.append(Case(f"{short}-cfg-{id_}", module, (f"--config={value}", *extra), needles, ("{new}",)))
    if grid:
      cases.append(Case(f"{short}-cfg-without-sweep", module, ("--config=configs/base.py", *extra),
                        ("sweep",), ("{new}",)))
  return cases


CASES += _config_cases()


# Cases that get as far as preparing data, building the model or loading a run (seconds each,
# measured with DLMSCALE_BAD_INPUT_TIMES=FILE): the slow suite. The rest fail in parsing (~0.2 s).
SLOW = {"main-eval-sequences-too-many", "main-workdir-damaged-config-json", "main-budget-beyond-corpus",
        "main-workdir-other-data", "main-workdir-other-config", "main-estimator-unknown",
        "main-mdm-schedule", "main-schedule-unknown", "main-workdir-read-only", "local-workdir-read-only",
        "main-cache-read-only", "data-cache-read-only",
        "sample-num-tokens-zero", "sample-num-tokens-too-many", "sample-temperature-negative",
        "sample-top-k-negative", "sample-top-p-above-one"}
FAST_CASES = [c for c in CASES if c.id not in SLOW]
SLOW_CASES = [c for c in CASES if c.id in SLOW]


_user = functools.cache(unprivileged_ids)  # root runs the unprivileged cases as this user


def _reachable_by_others(path: pathlib.Path) -> bool:
  """Whether another user can enter `path`: every directory down to it is searchable by others (a
  checkout under a private directory, e.g. `mktemp -d`, is not)."""
  return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _runnable(case: Case) -> bool:
  """An unprivileged case as root needs a user to run as and a checkout that user can enter (as root
  the command would just succeed)."""
  return not (case.unprivileged and os.geteuid() == 0
              and (_user() is None or not _reachable_by_others(ROOT)))


def _run_table(cases: list[Case], paths: dict[str, str]) -> dict[str, dict]:
  batch = []
  for c in cases:  # each case its own never-created paths: no case sees another's
    i = CASES.index(c)
    own = dict(paths, new=f"{paths['new']}-{i}", new_out=f"{paths['new_out']}-{i}")
    batch.append({"module": c.module, "argv": [x for a in c.argv for x in _expand(a, own)],
                  "cwd": str(ROOT), "env": {k: v.format(**own) for k, v in c.env},
                  "watch": [w.format(**own) for w in c.watch],
                  "user": _user() if c.unprivileged else None})
  out = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(batch), capture_output=True,
                       text=True, cwd=ROOT, env=subprocess_env(), timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:]
  got = {c.id: r for c, r in zip(cases, json.loads(out.stdout))}
  if os.environ.get("DLMSCALE_BAD_INPUT_TIMES"):  # where the table's seconds go
    with open(os.environ["DLMSCALE_BAD_INPUT_TIMES"], "a") as f:
      f.write(json.dumps(sorted(((r["wall_s"], k) for k, r in got.items()), reverse=True)) + "\n")
  return got


@pytest.fixture(scope="module")
def fast_results(paths) -> dict[str, dict]:
  return _run_table([c for c in FAST_CASES if _runnable(c)], paths)


@pytest.fixture(scope="module")
def slow_results(paths) -> dict[str, dict]:
  return _run_table([c for c in SLOW_CASES if _runnable(c)], paths)


def test_every_config_command_is_in_the_table():
  assert config_commands() == set(CONFIG_COMMANDS)


def test_the_table_is_large_and_its_ids_unique():
  assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
  assert SLOW <= {c.id for c in CASES}
  assert {c.module for c in CASES} >= {"dlmscale.main", "dlmscale.data", "dlmscale.evaluate",
                                       "dlmscale.sample", "launch.local", "analysis.report",
                                       "analysis.fit"}


def _check(case: Case, results: dict[str, dict]) -> None:
  if not _runnable(case):
    pytest.skip("root may write anywhere, and either no unprivileged user could be made (useradd) or "
                f"that user cannot enter the checkout at {ROOT} (a directory above it is private)")
  r = results[case.id]
  err = r["stderr"]
  assert "Traceback" not in err + r["stdout"], err
  assert r["rc"] == 2, (r["rc"], err, r["stdout"][-2000:])
  errors = [l for l in err.splitlines() if l.strip()]
  assert len(errors) == 1 and errors[0].startswith("error: "), err  # one line, nothing else
  assert "UserError" not in errors[0] and "internal error" not in errors[0], errors[0]
  for needle in case.needles:
    assert needle in errors[0], (needle, errors[0])
  assert r["changed"] == [], f"changed on failure: {r['changed']}"


@pytest.mark.parametrize("case", FAST_CASES, ids=[c.id for c in FAST_CASES])
def test_bad_input_is_exit_2_one_line_and_touches_nothing(case: Case, fast_results):
  _check(case, fast_results)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=[c.id for c in SLOW_CASES])
def test_bad_input_past_parsing_is_exit_2_one_line_and_touches_nothing(case: Case, slow_results):
  _check(case, slow_results)
