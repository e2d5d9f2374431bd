"""Every command in the README's code blocks, and every grid file's docstring example, runs.

Each README command has one entry in COMMANDS saying how it is exercised: `run` as written (in the
default suite), `dry` as written plus `--dry_run` (a launcher: flags, grid and every point's trainer
command, nothing trained), `slow` as written at test scale (the slow suite; the entry names the one
substitution, if any), or `skip` with the reason. A README command without an entry fails the
first test, so a new command cannot go unchecked. Commands run in a scratch directory that links
`configs/` and `analysis/` from this checkout, so relative paths (`runs/...`) stay out of the repo.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from configs import grid as grid_lib

PY = "python -m "
SKIP_VENV = "installs packages into a new venv (CI does exactly this on a clean clone)"
SKIP_SUITE = "the test suite itself"
SKIP_NODE = "a check to read on the accelerator node itself"
SKIP_WHEELS = ("downloads gigabytes of accelerator wheels; every pin was resolved for CPython 3.11 "
               "manylinux x86_64 with pip install --dry-run --report when the file was written")
SKIP_STUDY = ("the hours-long CPU study; its grid is checked in test_grid_configs.py and the same "
              "launcher and report commands run on the datacons test grid below")

SKIP_PLAN_RUNS = ("needs a grid large enough to fit the data-constrained law per family; "
                  "tests/test_plan.py runs --runs on fabricated run directories")

# command (as in the README, continuation lines joined) -> (how, substitutions or reason)
COMMANDS: dict[str, tuple[str, object]] = {
    "python -m launch.local --config=configs/cpu_study.py --workdir=runs/cpu_study --parallel=2": ("dry", {}),
    "python -m analysis.report --runs=runs/cpu_study --also=docs/cpu_study/lr_sweep --out=docs/cpu_study":
        ("skip", SKIP_STUDY),
    "git clone '<repo>'": ("skip", "clones this repository from wherever it is hosted; CI starts "
                                   "from exactly such a clone"),
    "cd dlmscale": ("skip", "the clone's directory"),
    "python3 -m venv .venv": ("skip", SKIP_VENV),
    ". .venv/bin/activate": ("skip", SKIP_VENV),
    "pip install -r requirements.txt": ("skip", SKIP_VENV),
    "python3.11 -m venv .venv": ("skip", SKIP_VENV),
    "pip install -r requirements-gpu.txt": ("skip", SKIP_VENV),
    "pip install -r requirements-tpu.txt": ("skip", SKIP_VENV),
    "pip download -d wheels -r requirements-gpu.txt": ("skip", SKIP_WHEELS),
    "pip install --no-index --find-links wheels -r requirements-gpu.txt": ("skip", SKIP_WHEELS),
    "pip download -d wheels -r requirements-tpu.txt": ("skip", SKIP_WHEELS),
    "pip install --no-index --find-links wheels -r requirements-tpu.txt": ("skip", SKIP_WHEELS),
    "python -c 'import jax; print(jax.devices())'": ("skip", SKIP_NODE),
    "python3 --version": ("skip", SKIP_NODE),
    "python -m dlmscale.main --config=configs/base.py --workdir=runs/gpu-s250M --config.model_size=s250M "
    "--config.model.dtype=bfloat16 --config.model.loss_chunk=512 --config.micro_batch_size=8":
        ("skip", "needs a GPU: bench/gpu_check.sh runs these settings; tests/test_accumulate.py and "
                 "tests/test_chunked_loss.py check their numbers on CPU"),
    "python -m launch.local --config=configs/quickstart.py --workdir=runs/quickstart --parallel=2": ("dry", {}),
    "python -m pytest -q -m 'not slow'": ("skip", SKIP_SUITE),
    "python -m dlmscale.main --config=configs/quickstart.py:objectives=mdm,epochs=16 --workdir=runs/qs-mdm":
        ("slow", {}),
    "python -m dlmscale.main --config=configs/base.py --workdir=runs/my-run --config.objective=ar "
    "--config.model_size=s3M --config.unique_tokens=1000000 --config.epochs=16.0":
        ("slow", {"env": "DLMSCALE_FAULT=term:1"}),  # hours on a CPU: prepare, compile, one step, stop
    "python -m dlmscale.evaluate --workdir=runs/qs-mdm '[--task=my_task.jsonl]' '[--mc_samples=32]'":
        ("slow", {}),
    "python -m dlmscale.sample --workdir=runs/qs-mdm '--prompt=def parse(' --steps=64 '[--method=confidence]'":
        ("slow", {}),
    "python -m launch.local --config=configs/datacons.py:scale=cpu --workdir=runs/datacons --parallel=2":
        ("slow", {"scale=cpu": "scale=test"}),
    "python -m launch.slurm --config=configs/datacons.py:scale=cluster --workdir=/shared/runs/dc "
    "--partition=gpu --nodes=1 --gpus_per_node=8 --time=24:00:00 --dry_run": ("run", {"/shared/": "shared/"}),
    "python -m launch.tpu --config=configs/datacons.py:scale=cluster --workdir=/mnt/runs/dc --tpu=my-v5e "
    "--zone=us-west4-a --accelerator_type=v5litepod-16 --dry_run": ("run", {}),
    "python -m launch.manifest --workdir=runs/datacons": ("slow", {}),
    "python -m analysis.report --runs=runs/datacons --out=runs/datacons/report": ("slow", {}),
    "python -m analysis.fit --law=chinchilla --csv=analysis/reference/chinchilla_besiroglu.csv --drop_highest=5":
        ("run", {}),
    "python -m analysis.fit --law=datacons --csv=analysis/reference/datablations_runs_fit182.csv "
    "--frozen_base=muennighoff_c4 --search=published": ("run", {}),
    "python -m analysis.fit --law=kaplan --csv=analysis/reference/chinchilla_besiroglu.csv --bootstrap=100":
        ("run", {}),
    "python -m analysis.plan --constants=muennighoff_c4 --compute=1e22 --unique=25e9": ("run", {}),
    "python -m analysis.plan --runs=runs/datacons --compute=1e18 --unique=1e8": ("skip", SKIP_PLAN_RUNS),
    "python -m dlmscale.data '--corpus=data/*.jsonl' --text_field=text --out_dir=prepared/mycorpus "
    "--vocab_size=8192 --seq_len=1024": ("slow", {}),
    "python -m dlmscale.main --config=configs/base.py --workdir=runs/x '--config.data.corpus=data/*.jsonl'":
        ("slow", {"env": "DLMSCALE_FAULT=term:1"}),
    "python -m dlmscale.data '--corpus=c4/en/c4-train.0000[0-1]-of-01024.json.gz' "
    "--tokenizer=gpt2/tokenizer.json --vocab_size=0 --seq_len=2048 --val_tokens=4194304":
        ("skip", "needs C4's files and GPT-2's tokenizer.json, which are not in the repository; "
                 "tests/test_data_formats.py runs the same path on a .json.gz stand-in it writes"),
    "python -m launch.local --config=configs/c4.py --workdir=runs/c4": ("dry", {}),
}


def _normalise(line: str) -> list[str]:
  """One shell line -> its commands, each as shlex would re-quote it (comments dropped)."""
  out = []
  for part in line.split("&&"):
    words = shlex.split(part, comments=True)
    if words:
      out.append(shlex.join(words))
  return out


def readme_commands() -> list[str]:
  text = (REPO / "README.md").read_text()
  cmds = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      cmds += _normalise(line)
  return cmds


def docstring_grid_specs() -> list[str]:
  """`--config=configs/F.py[:ARG]` in every grid file's docstring."""
  specs = []
  for path in sorted((REPO / "configs").glob("*.py")):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    specs += re.findall(r"--config=(configs/\w+\.py(?::\S+)?)", doc)
  return specs


def test_every_readme_command_has_an_entry_and_every_entry_is_in_the_readme():
  cmds = readme_commands()
  assert len(cmds) >= 20
  missing = [c for c in cmds if c not in COMMANDS]
  assert not missing, f"README commands with no entry in COMMANDS: {missing}"
  stale = [c for c in COMMANDS if c not in cmds]
  assert not stale, f"COMMANDS entries the README no longer has: {stale}"


@pytest.mark.parametrize("spec", sorted(set(docstring_grid_specs() + [
    w.split("=", 1)[1] for c in COMMANDS for w in shlex.split(c) if w.startswith("--config=configs/")])))
def test_every_documented_grid_spec_resolves(spec):
  import importlib
  path, _, arg = spec.partition(":")
  module = importlib.import_module(path[:-3].replace("/", "."))
  config = module.get_config(arg or None)
  if not hasattr(module, "sweep"):  # configs/base.py: one run
    return
  points = module.sweep(arg or None)
  assert points and all(grid_lib.apply_overrides(config, p).run_name == p["run_name"] for p in points)


def _scratch(tmp: pathlib.Path) -> pathlib.Path:
  for name in ("configs", "analysis"):
    (tmp / name).symlink_to(REPO / name)
  return tmp


def _run(cmd: str, cwd: pathlib.Path, subs: dict | None = None, extra: str = "",
         timeout: int = 900) -> subprocess.CompletedProcess:
  """`cmd` with its documented substitutions; `[--opt]` brackets keep the option."""
  env = subprocess_env()
  for old, new in (subs or {}).items():
    if old == "env":
      key, value = new.split("=", 1)
      env[key] = value
    else:
      assert old in cmd
      cmd = cmd.replace(old, new)
  words = [w[1:-1] if w.startswith("[") and w.endswith("]") else w for w in shlex.split(cmd)]
  assert words[:2] == ["python", "-m"] or words[:2] == ["python3", "-m"]
  words = [sys.executable, *words[1:], *shlex.split(extra)]
  return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 0, (proc.args, proc.stdout[-2000:], proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr
  return proc.stdout


@pytest.mark.parametrize("cmd", [c for c, (how, _) in COMMANDS.items() if how in ("run", "dry")])
def test_default_suite_commands_run_as_written(cmd, tmp_path):
  how, subs = COMMANDS[cmd]
  out = _ok(_run(cmd, _scratch(tmp_path), subs, extra="--dry_run" if how == "dry" else ""))
  if "launch.local" in cmd:
    spec = shlex.split(cmd)[3].split("=", 1)[1]
    module = __import__(f"configs.{spec.split(':')[0][8:-3]}", fromlist=["sweep"])
    n = len(module.sweep(spec.partition(":")[2] or None))
    assert out.count("python -m dlmscale.main --config=") == n  # one trainer command per point
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
  if "--law=datacons" in cmd:
    assert json.loads(out)["R_D_star"] == pytest.approx(15.4, abs=0.05)  # "R_D* = 15.4, as published"
  if "--law=chinchilla" in cmd:
    got = json.loads(out)
    assert got["n_points"] > 200 and 0.2 < got["params"]["alpha"] < 0.5
  if "launch.tpu" in cmd:
    assert "$ gcloud compute tpus" in out
  if "launch.slurm" in cmd:
    assert "sbatch --parsable" in out


def _task_file(path: pathlib.Path) -> None:
  rows = [{"context": "def main(", "choices": [")", "x = 1"], "label": 0},
          {"context": "import ", "choices": ["os", "(("], "label": 0}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_one_run_evaluate_and_sample_commands(tmp_path):
  """README "One run" and "Evaluation and sampling", as written, on runs/qs-mdm."""
  cwd = _scratch(tmp_path)
  run = [c for c in COMMANDS if c.startswith("python -m dlmscale.main --config=configs/quickstart.py")][0]
  _ok(_run(run, cwd))
  summary = json.loads((cwd / "runs/qs-mdm/summary.json").read_text())
  assert (summary["run_name"], summary["objective"], summary["epochs"]) == ("mdm-s0.1M-u12.8k-e16-seed0", "mdm", 16.0)
  _task_file(cwd / "my_task.jsonl")
  evaluate = [c for c in COMMANDS if c.startswith("python -m dlmscale.evaluate")][0]
  _ok(_run(evaluate, cwd))
  got = json.loads((cwd / "runs/qs-mdm/eval.json").read_text())
  assert got["loss"] > 0 and got["loss_se"] > 0 and got["task_items"] == 2  # the two my_task.jsonl items
  sample = [c for c in COMMANDS if c.startswith("python -m dlmscale.sample")][0]
  out = _ok(_run(sample, cwd))
  assert out.startswith("def parse(") and len(out.strip()) > len("def parse(")


@pytest.mark.slow
def test_grid_manifest_and_report_commands_at_test_scale(tmp_path):
  """README "A grid" and "Analysis": the datacons grid (at scale=test), its status, its report."""
  cwd = _scratch(tmp_path)
  launch = [c for c in COMMANDS if c.startswith("python -m launch.local --config=configs/datacons.py")][0]
  _ok(_run(launch, cwd, COMMANDS[launch][1]))
  names = [p["run_name"] for p in __import__("configs.datacons", fromlist=["x"]).sweep("scale=test")]
  assert all((cwd / "runs/datacons" / n / "summary.json").exists() for n in names)
  status = _ok(_run("python -m launch.manifest --workdir=runs/datacons", cwd))
  assert re.search(rf"done\s+{len(names)}\b", status), status
  _ok(_run("python -m analysis.report --runs=runs/datacons --out=runs/datacons/report", cwd))
  fits = json.loads((cwd / "runs/datacons/report/fits.json").read_text())
  assert fits["grid"]["n_finished"] == len(names) and fits["grid"]["manifest"]["n_missing"] == 0
  assert (cwd / "runs/datacons/report/report.md").read_text().startswith("#")


@pytest.mark.slow
def test_own_data_and_long_run_commands_start(tmp_path):
  """README "Data" (prepare your own JSONL) and the two base-config runs, as written; the runs are
  hours on a CPU, so they are stopped (SIGTERM) before their first step and must exit cleanly."""
  import sysconfig
  cwd = _scratch(tmp_path)
  (cwd / "data").mkdir()
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  # ~800 files: enough validation text for 256 x 256 tokens from the validation documents left
  # after the tune set's share (data/evalset.py TUNE_FRACTION) is held apart.
  files = sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py"))[:600]
  for i in range(3):
    (cwd / "data" / f"part{i}.jsonl").write_text("".join(
        json.dumps({"text": f.read_text(errors="replace")}) + "\n" for f in files[i::3]))
  slow = [c for c, (how, _) in COMMANDS.items() if how == "slow"]
  prep = [c for c in slow if c.startswith("python -m dlmscale.data")][0]
  _ok(_run(prep, cwd))
  manifest = json.loads((cwd / "prepared/mycorpus/manifest.json").read_text())
  assert json.dumps(manifest).count("8192") >= 1
  for cmd in [c for c in slow if c.startswith("python -m dlmscale.main --config=configs/base.py")]:
    out = _ok(_run(cmd, cwd, COMMANDS[cmd][1]))
    assert "stopped by signal" in out
