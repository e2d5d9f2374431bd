"""Running EleutherAI's lm-eval harness on a saved run.

  python -m dlmscale.lm_eval --workdir=RUN --tasks=hellaswag,arc_easy [--include_path=DIR]
      [--mc_method=elbo|chain] [--mc_estimator=time|count] [--mc_samples=K] [--batch_size=B]
      [--num_fewshot=N] [--limit=N] [--output=FILE]

Scores as `python -m dlmscale.evaluate` does (eval/harness.py): AR exact log-probabilities, diffusion
the conditional ELBO (or the chain). `--include_path` adds a folder of task YAMLs (local tasks need
no download). Writes lm-eval's results to run_dir.lm_eval_path (or --output). lm-eval is optional:
pip install -r requirements-eval.txt.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from dlmscale.errors import UserError


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory of a trained run", flag_values=fv)
  flags.DEFINE_list("tasks", [], "lm-eval task names (comma-separated)", flag_values=fv)
  flags.DEFINE_string("include_path", None, "a folder of extra task YAMLs (local tasks)",
                      flag_values=fv)
  flags.DEFINE_string("mc_method", "", "diffusion scoring: elbo (default) | chain", flag_values=fv)
  flags.DEFINE_string("mc_estimator", "", "elbo weights ('' = the run's eval.mdm_estimator): time | count",
                      flag_values=fv)
  flags.DEFINE_integer("mc_samples", None, "diffusion time samples K (default: config.eval.mc_samples)",
                       flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "sequences per batch (default: config.eval.batch_size)",
                       flag_values=fv)
  flags.DEFINE_integer("num_fewshot", None, "few-shot examples (default: the task's)", flag_values=fv)
  flags.DEFINE_integer("limit", None, "score only the first N documents of each task", flag_values=fv)
  flags.DEFINE_string("output", None, "results JSON (default: RUN/" + run_dir.LM_EVAL + ")",
                      flag_values=fv)
  return fv


def run_tasks(workdir, tasks, *, include_path=None, mc_method="", mc_estimator="", mc_samples=None,
              batch_size=None, num_fewshot=None, limit=None, log_samples=False) -> dict:
  """lm-eval's simple_evaluate on the run; returns its results dict."""
  try:
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager
  except ImportError:
    raise UserError("lm-eval is not installed; pip install -r requirements-eval.txt") from None
  from dlmscale.eval.lm_eval_model import DlmscaleLM
  if not tasks:
    raise UserError("--tasks is empty; name at least one lm-eval task")
  manager = TaskManager(include_path=str(include_path) if include_path else None)
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)}"
                    + ("" if include_path else "; local task YAMLs need --include_path=DIR"))
  lm = DlmscaleLM(workdir=str(workdir), mc_method=mc_method, mc_estimator=mc_estimator,
                  mc_samples=mc_samples, batch_size=batch_size)
  return evaluator.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                                   num_fewshot=num_fewshot, limit=limit, log_samples=log_samples,
                                   bootstrap_iters=0)


def _main() -> None:
  fv = cli_guard.parse_run_flags(_define_flags, sys.argv)
  results = run_tasks(fv.workdir, fv.tasks, include_path=fv.include_path, mc_method=fv.mc_method,
                      mc_estimator=fv.mc_estimator, mc_samples=fv.mc_samples,
                      batch_size=fv.batch_size, num_fewshot=fv.num_fewshot, limit=fv.limit)
  out = {"workdir": str(fv.workdir), "tasks": fv.tasks, "results": results["results"],
         "configs": results.get("configs", {})}
  path = fv.output or run_dir.lm_eval_path(fv.workdir)
  run_dir.write_json_atomic(path, json.loads(json.dumps(out, default=str)))
  for task, r in results["results"].items():
    print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float)))
  print(f"wrote {path}")


def main() -> int:
  return cli_guard.cli_main(_main)


if __name__ == "__main__":
  sys.exit(main())
