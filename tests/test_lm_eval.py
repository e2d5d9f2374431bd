"""The lm-eval adapter (python -m dlmscale.lm_eval): a local multiple-choice task (YAML + JSONL written
here, nothing downloaded) scores the same numbers as `python -m dlmscale.evaluate` on the same items.

Needs the optional lm-eval (requirements-eval.txt); skipped with that reason where it is missing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dlmscale.eval import harness
from dlmscale.eval import task_file
from helpers.runs import trained_run

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is optional: pip install -r requirements-eval.txt")

from dlmscale.commands import evaluate, lm_eval as lm_eval_cmd  # noqa: E402
from dlmscale.eval.lm_eval_model import DlmscaleLM  # noqa: E402
from dlmscale.data import pipeline  # noqa: E402
from dlmscale.eval import scoring  # noqa: E402
from dlmscale.objectives.mdm import ElboSettings  # noqa: E402
from dlmscale.train import open_run  # noqa: E402

TASK = "dlmscale_tiny_mc"
ITEMS = [
    {"context": "def decode(self, s", "choices": [", _w=WHITESPACE.match):", " = None", "[0]"], "label": 0},
    {"context": "import", "choices": [" re", " json", " textwrap", " string"], "label": 0},
    {"context": "    return", "choices": [" None", " self", " result"], "label": 1},
    {"context": "class", "choices": [" JSONDecoder(object):", " Template:", " Formatter:"], "label": 2},
    {"context": "for i in", "choices": [" range(n):", " items:"], "label": 0},
    {"context": "if not", "choices": [" s:", " self.strict:", " x"], "label": 1},
]


@pytest.fixture(scope="module", autouse=True)
def _offline():
  old = os.environ.get("HF_DATASETS_OFFLINE")
  os.environ["HF_DATASETS_OFFLINE"] = "1"
  yield
  if old is None:
    os.environ.pop("HF_DATASETS_OFFLINE", None)
  else:
    os.environ["HF_DATASETS_OFFLINE"] = old


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("lm_eval_task")
  (d / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
  (d / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'items.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
""")
  return d


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_local_task_equals_evaluate(objective, tmp_path_factory, tiny_corpus, data_cache, task_dir):
  workdir = trained_run(tmp_path_factory, tiny_corpus, data_cache, objective)
  ours = evaluate.evaluate_run(workdir, task=str(task_dir / "items.jsonl"), mc_items=4)
  res = lm_eval_cmd.run_tasks(workdir, [TASK], include_path=task_dir, log_samples=True)
  assert res["results"][TASK]["acc,none"] == pytest.approx(ours["task_accuracy"], abs=1e-12)
  # per item and choice: the same log-likelihoods (or ELBO bounds) the evaluator ranks
  run = open_run.load(workdir)
  items = task_file.tokenize(task_file.read_task(task_dir / "items.jsonl"),
                             pipeline.load_tokenizer(run.data.prepared), run.data.prepared.eod_id,
                             run.setup.model_cfg.max_len)
  method = scoring.scoring_method(run.config.objective, "")
  want = scoring.score_task(run, items, method, int(run.config.eval.batch_size),
                            ElboSettings.of(run.config)).scores
  for s in res["samples"][TASK]:
    got = [float(r[0][0]) for r in s["resps"]]
    np.testing.assert_allclose(got, want[s["doc_id"]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_rolling_and_generate(objective, tmp_path_factory, tiny_corpus, data_cache):
  workdir = trained_run(tmp_path_factory, tiny_corpus, data_cache, objective)
  lm = DlmscaleLM(workdir=str(workdir))
  h = lm.harness
  text = "def decode(self, s, _w=WHITESPACE.match):\n    obj, end = self.raw_decode(s)\n" * 3
  assert len(h.encode(text)) + 1 > h.max_len  # more than one window
  (total,) = h.loglikelihood_rolling([text])
  windows = h.rolling_windows(text)
  assert sum(len(w.choices[0]) for w in windows) == len(h.encode(text))
  assert np.isfinite(total) and total < 0
  if objective == "ar":  # exact: the sum of per-token log-probs equals the window sum
    (whole,) = h.loglikelihood([harness.Request("", text[:20])])
    assert whole[0] < 0
  out = h.generate("import", ["\n"], 8)
  assert isinstance(out, str) and "\n" not in out


def test_command_writes_results(tmp_path_factory, tiny_corpus, data_cache, task_dir):
  import subprocess
  import sys
  from conftest import REPO, subprocess_env
  from dlmscale import run_dir
  workdir = trained_run(tmp_path_factory, tiny_corpus, data_cache, "ar")
  p = subprocess.run([sys.executable, "-m", "dlmscale.lm_eval", f"--workdir={workdir}",
                      f"--tasks={TASK}", f"--include_path={task_dir}"], capture_output=True,
                     text=True, cwd=REPO, env=subprocess_env(HF_DATASETS_OFFLINE="1"), timeout=300)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  out = json.loads(run_dir.lm_eval_path(workdir).read_text())
  assert 0.0 <= out["results"][TASK]["acc,none"] <= 1.0
  bad = subprocess.run([sys.executable, "-m", "dlmscale.lm_eval", f"--workdir={workdir}",
                        "--tasks=no_such_task_here"], capture_output=True, text=True, cwd=REPO,
                       env=subprocess_env(HF_DATASETS_OFFLINE="1"), timeout=300)
  assert bad.returncode == 2 and "unknown lm-eval task" in bad.stderr + bad.stdout
