"""Turns the learning-rate sweep's runs into each family's lr multiplier, the file the CPU study reads.

  python -m analysis.lr_choice --runs=runs/lr_sweep --out=docs/cpu_study/lr_choice.json

The procedure, the same for both families: a run's score is its best loss on the tune set (the
minimum over its evaluations: the study reads each run at its best too). At each size, a
multiplier's excess is its score minus the best score at that size. The family's multiplier is the
one with the smallest mean excess over the sizes, among multipliers finished at every size: one
multiple of the size rule per family, which keeps the rule's trend across sizes. A choice on the edge
of the swept range is flagged (the optimum may lie beyond it). Beside each size's best, every other
multiplier's paired difference (same tune sequences, per-sequence losses at each run's best step,
standard error clustered by document) says which rates the tune set cannot tell apart. Runs scored
on another eval set are refused: choosing on the val set would leak into the claims.

The file records the table, the choice, and its provenance (commit, host, time, load, runs found and
finished), so a partial sweep's choice says that it is partial.
"""

from __future__ import annotations

import datetime
import math
import os
import pathlib
import socket
import subprocess
import sys
from typing import Any

from configs import grid as grid_lib
from dlmscale import run_dir as rundir
from dlmscale.commands.guard import ArgumentParser, cli_main
from dlmscale.data import evalset
from dlmscale.errors import UserError
from launch import grids

FAMILIES = ("ar", "mdm")


def read_sweep(root: pathlib.Path) -> list[dict[str, Any]]:
  """One record per run directory under root: family, size, multiplier, finished, best tune loss."""
  if not root.is_dir():
    raise UserError(f"--runs={root}: no such directory; pass the sweep's --workdir")
  out = []
  for run in sorted(p.parent for p in root.glob("*/" + rundir.CONFIG)):
    cfg = rundir.stored_config(run)
    eval_set = cfg.get("eval", {}).get("set", "val")
    if eval_set != "tune":
      raise UserError(f"{run}: scored on eval.set={eval_set!r}; the lr choice reads tune-set runs only "
                      "(configs/lr_sweep.py)")
    size, lr = cfg["model_size"], float(cfg["optim"]["lr"])
    best = rundir.best_eval(rundir.read_metrics(run))
    losses = rundir.losses_path(run, best["step"]) if best else None
    out.append({"run_name": cfg.get("run_name") or run.name, "objective": cfg["objective"],
                "losses_file": str(losses) if losses and losses.is_file() else None,
                "model_size": size, "lr": lr, "multiplier": round(lr / grid_lib.LR_BY_SIZE[size], 6),
                "finished": rundir.is_finished(run),
                "best_tune_loss": best and best["loss"], "best_tune_loss_se": best and best.get("loss_se"),
                "best_epoch": best and best.get("epoch")})
  if not out:
    raise UserError(f"--runs={root}: no run directories ({rundir.CONFIG}) yet; start the sweep first")
  return out


def choose(records: list[dict[str, Any]], family: str) -> dict[str, Any]:
  """The family's multiplier by smallest mean excess over sizes (module docstring), with its table."""
  done = [r for r in records if r["objective"] == family and r["finished"] and r["best_tune_loss"] is not None]
  sizes = sorted({r["model_size"] for r in done}, key=lambda s: grid_lib.LR_BY_SIZE[s], reverse=True)
  score = {(r["model_size"], r["multiplier"]): r["best_tune_loss"] for r in done}
  mults = sorted({r["multiplier"] for r in done})
  eligible = [m for m in mults if all((s, m) in score for s in sizes)]
  if not eligible:
    raise UserError(f"no {family} multiplier has finished at every swept size yet; wait for the sweep")
  best_at = {s: min(score[(s, m)] for m in mults if (s, m) in score) for s in sizes}
  excess = {m: sum(score[(s, m)] - best_at[s] for s in sizes) / len(sizes) for m in eligible}
  chosen = min(eligible, key=lambda m: (excess[m], abs(math.log(m))))
  swept = sorted({r["multiplier"] for r in records if r["objective"] == family})
  by_key = {(r["model_size"], r["multiplier"]): r for r in done}
  paired = {s: paired_vs_best([by_key[(s, m)] for m in mults if (s, m) in by_key]) for s in sizes}
  return {"multiplier": chosen, "sizes": sizes, "mean_excess_by_multiplier": excess,
          "paired_vs_best_by_size": paired,
          "best_multiplier_by_size": {s: min((m for m in mults if (s, m) in score), key=lambda m: score[(s, m)])
                                      for s in sizes},
          "at_edge_of_sweep": chosen in (swept[0], swept[-1]),
          "complete": len(done) == sum(r["objective"] == family for r in records)}


def paired_vs_best(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """{multiplier: {"diff", "se", "within_2se"}} against the best run of one size, on shared sequences."""
  best = min(runs, key=lambda r: r["best_tune_loss"])
  if not best["losses_file"]:
    return {}
  ref = evalset.load_losses(best["losses_file"])
  out = {}
  for r in runs:
    if r is best or not r["losses_file"]:
      continue
    other = evalset.load_losses(r["losses_file"])
    if not (other["chunk_N"].shape == ref["chunk_N"].shape and (other["chunk_N"] == ref["chunk_N"]).all()):
      continue  # not the same sequences: no paired difference
    d_N = other["loss_N"] - ref["loss_N"]
    se = evalset.clustered_se(d_N, ref["document_N"])
    out[str(r["multiplier"])] = {"diff": float(d_N.mean()), "se": se, "within_2se": bool(d_N.mean() <= 2 * se)}
  return {"best": best["multiplier"], "others": out}


def provenance(root: pathlib.Path, records: list[dict[str, Any]]) -> dict[str, Any]:
  try:
    commit = subprocess.run(["git", "-C", str(grids.REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  return {"command": "python -m analysis.lr_choice " + " ".join(sys.argv[1:]), "runs": str(root),
          "commit": commit, "host": socket.gethostname(), "cpus": os.cpu_count(),
          "load_average": list(os.getloadavg()),
          "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "runs_found": len(records), "runs_finished": sum(r["finished"] for r in records)}


def main(argv: list[str] | None = None) -> int:
  p = ArgumentParser(prog="python -m analysis.lr_choice", description=__doc__.split("\n")[0])
  p.add_argument("--runs", required=True, help="the sweep's workdir (configs/lr_sweep.py)")
  p.add_argument("--out", required=True, help="the choice file, e.g. docs/cpu_study/lr_choice.json")
  args = p.parse_args(argv)

  def body() -> int:
    root = pathlib.Path(args.runs)
    records = read_sweep(root)
    per_family = {f: choose(records, f) for f in FAMILIES}
    doc = {"multipliers": {f: per_family[f]["multiplier"] for f in FAMILIES},
           "rule": "optim.lr = configs.grid.LR_BY_SIZE[size] x multipliers[objective]",
           "procedure": "analysis/lr_choice.py: smallest mean excess best-tune-loss over the swept sizes",
           "families": per_family, "runs": records, "provenance": provenance(root, records)}
    rundir.write_json_atomic(pathlib.Path(args.out), doc)
    for f in FAMILIES:
      c = per_family[f]
      print(f"{f}: multiplier {c['multiplier']:g} (best by size {c['best_multiplier_by_size']}"
            f"{'; ON THE EDGE of the sweep' if c['at_edge_of_sweep'] else ''}"
            f"{'' if c['complete'] else '; sweep not finished'})")
    print(f"wrote {args.out}")
    return 0
  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
