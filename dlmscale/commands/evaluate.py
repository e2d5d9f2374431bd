"""Evaluating a saved run: validation, the built-in task, a task file.

  python -m dlmscale.evaluate --workdir=RUN [--task=FILE.jsonl] [--mc_samples=K]
      [--mc_method=elbo|chain] [--mc_estimator=time|count] [--mc_items=N] [--batch_size=B] [--num_sequences=N]

writes the run's eval record (run_dir.eval_path): loss, loss_se, n_tokens (validation); mc_accuracy, mc_accuracy_se (the
built-in task from the validation split); task_accuracy, task_accuracy_se (the task file, if given).
"""

from __future__ import annotations

import sys
import time

from absl import flags

from dlmscale import run_dir
from dlmscale.commands import guard as cli_guard
from dlmscale.data import pipeline
from dlmscale.errors import UserError
from dlmscale.eval import builtin_task, scoring, task_file
from dlmscale.objectives.mdm import ESTIMATORS, ElboSettings
from dlmscale.train import open_run


def _builtin_task(run: open_run.Loaded, method: str, batch_size: int, elbo: ElboSettings,
                  mc_items: int) -> dict:
  """The built-in task's numbers (from the validation split), or why there are none."""
  out = {}
  t0 = time.perf_counter()
  try:
    items = builtin_task.make_task(run.data.prepared.val_chunks, run.data.prepared.eod_id,
                                   run.setup.model_cfg.max_len, n_items=mc_items)
  except UserError as e:  # too little validation text: still report the rest
    print(f"warning: no built-in task: {e}", flush=True)
    out.update(mc_accuracy=None, mc_accuracy_se=None, mc_skipped=str(e))
  else:
    r = scoring.score_task(run, items, method, batch_size, elbo)
    out.update(mc_accuracy=r.accuracy, mc_accuracy_se=r.accuracy_se, mc_accuracy_norm=r.accuracy_norm,
               mc_accuracy_norm_se=r.accuracy_norm_se, mc_items=r.n_items,
               mc_choices=len(items[0].choices), mc_wall_s=round(time.perf_counter() - t0, 3))
    print(f"built-in task: accuracy {r.accuracy:.4f} +/- {r.accuracy_se:.4f} ({r.n_items} items, "
          f"{len(items[0].choices)} choices, {method})", flush=True)
  return out


def evaluate_run(workdir, *, task: str | None = None, mc_samples: int | None = None,
                 mc_method: str = "", mc_estimator: str = "", mc_items: int = 200,
                 batch_size: int | None = None, num_sequences: int | None = None) -> dict:
  """Validation, built-in task and (optionally) a task file for the run's newest checkpoint."""
  text_items = task_file.read_task(task) if task else None  # bad task files fail before any work
  if mc_samples is not None and mc_samples < 1:
    raise UserError(f"--mc_samples={mc_samples} must be >= 1")
  if mc_items < 1:
    raise UserError(f"--mc_items={mc_items} must be >= 1")
  run_config, _ = open_run.read_config(workdir)
  method = scoring.scoring_method(run_config.objective, mc_method)
  mc_estimator = mc_estimator or run_config.eval.mdm_estimator
  if mc_estimator not in ESTIMATORS:
    raise UserError(f"--mc_estimator={mc_estimator!r}: choose one of {', '.join(ESTIMATORS)}")
  if mc_estimator == "count" and run_config.get("mdm", {}).get("schedule", "linear") != "linear":
    raise UserError("--mc_estimator=count assumes the linear masking schedule; use time")

  def edit(c):
    if mc_samples is not None:
      c.eval.mc_samples = int(mc_samples)

  run = open_run.load(workdir, edit)
  c = run.config
  elbo = ElboSettings.of(c, estimator=mc_estimator)
  batch_size = int(batch_size or c.eval.batch_size)
  out = {"workdir": str(run.workdir), "step": run.step, "objective": c.objective,
         "mc_samples": int(c.eval.mc_samples) if c.objective == "mdm" else None,
         "eval_seed": int(c.eval.seed), "eval_set": c.eval.get("set", "val"), "mc_method": method,
         "mc_estimator": mc_estimator if method == "elbo" else None}
  t0 = time.perf_counter()
  v = scoring.validation(run, batch_size, int(num_sequences or c.eval.num_sequences))
  out.update(loss=v.loss, loss_se=v.loss_se, loss_se_naive=v.loss_se_naive, n_tokens=v.n_tokens,
             n_sequences=v.n_sequences, eval_documents=v.eval_documents,
             validation_wall_s=round(time.perf_counter() - t0, 3))
  print(f"validation: {v.loss:.4f} +/- {v.loss_se:.4f} nats/token ({v.n_sequences} sequences, "
        f"{v.n_tokens} tokens, {v.eval_documents} documents; SE clustered by document)", flush=True)
  out.update(_builtin_task(run, method, batch_size, elbo, mc_items))
  if text_items is not None:
    t0 = time.perf_counter()
    prepared = run.data.prepared
    items = task_file.tokenize(text_items, pipeline.load_tokenizer(prepared), prepared.eod_id,
                               run.setup.model_cfg.max_len, str(task))
    r = scoring.score_task(run, items, method, batch_size, elbo)
    out.update(task_file=str(task), task_accuracy=r.accuracy, task_accuracy_se=r.accuracy_se,
               task_accuracy_norm=r.accuracy_norm, task_accuracy_norm_se=r.accuracy_norm_se,
               task_items=r.n_items, task_wall_s=round(time.perf_counter() - t0, 3))
    print(f"{task}: accuracy {r.accuracy:.4f} +/- {r.accuracy_se:.4f} (length-normalised "
          f"{r.accuracy_norm:.4f}; {r.n_items} items, {method})", flush=True)
  path = run_dir.eval_path(run.workdir)
  run_dir.write_json_atomic(path, out)
  print(f"wrote {path}")
  return out


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory of a trained run", flag_values=fv)
  flags.DEFINE_string("task", None, "JSONL multiple-choice file: context, choices, label", flag_values=fv)
  flags.DEFINE_integer("mc_samples", None, "diffusion time samples K (default: config.eval.mc_samples)",
                       flag_values=fv)
  flags.DEFINE_string("mc_method", "", "diffusion choice scoring: elbo (default) | chain", flag_values=fv)
  flags.DEFINE_string("mc_estimator", "", "elbo sample weights ('' = the run's eval.mdm_estimator): "
                      "time (1/t, as trained) | count "
                      "(E[1/t | mask set]: same mean, lower variance; linear schedule)", flag_values=fv)
  flags.DEFINE_integer("mc_items", 200, "items of the built-in task", flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "sequences per batch (default: config.eval.batch_size)",
                       flag_values=fv)
  flags.DEFINE_integer("num_sequences", None, "validation chunks (default: config.eval.num_sequences)",
                       flag_values=fv)
  return fv


def _main() -> None:
  fv = cli_guard.parse_run_flags(_define_flags, sys.argv)
  evaluate_run(fv.workdir, task=fv.task, mc_samples=fv.mc_samples, mc_method=fv.mc_method,
               mc_estimator=fv.mc_estimator, mc_items=fv.mc_items, batch_size=fv.batch_size, num_sequences=fv.num_sequences)


def main() -> int:
  return cli_guard.cli_main(_main)


if __name__ == "__main__":
  sys.exit(main())
