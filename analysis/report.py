"""python -m analysis.report --runs=DIR --out=DIR: tables, fits.json, figures, report.md and a
one-page report.html (figures inline). --redraw=DIR draws a committed report again in today's layout
from its own fits.json and tables, every number as it was.

Works on a partial grid: unfinished runs are listed (and compared with DIR/grid_manifest.json when
present), fits that lack evidence say so instead of failing. Only a grid with no finished run at all
is an error.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pandas as pd

from analysis.findings import answer, coverage, critical, epochs, law_fits, points, sweeps, tuning
from analysis.render import html, markdown
from analysis.render.jsonable import to_jsonable
from analysis.runs import collect, tables
from dlmscale import run_dir as rundir
from dlmscale.commands.guard import ArgumentParser, cli_main
from dlmscale.errors import UserError


def analyze(runs_dir: pathlib.Path, *, n_boot: int = 200, seed: int = 0, grid: str = "full",
            param_col: str = "params_non_embedding", target: str = "envelope",
            collected: collect.Collected | None = None,
            task_runs: pathlib.Path | None = None,
            also: list[pathlib.Path] = ()) -> tuple[collect.Collected, object, dict]:
  """collected: tables read elsewhere (--tables); by default every run under runs_dir.
  task_runs: a grid directory of re-runs with eval.task_every > 0 (the task curves' source).
  also: other grids analysed with this one (workdirs or report directories), e.g. the lr sweep;
  the grid summary and the manifest check describe runs_dir's own runs."""
  own = collected or collect.collect(runs_dir)
  collect.require_finished(own, runs_dir)
  extra = {str(d): tables.read_any(d) for d in also}
  collected = collect.combine(own, extra)
  replicas = collect.collect(task_runs) if task_runs else None
  claim = points.claim_runs(collected.runs)
  every = points.points(claim, param_col=param_col)  # with label-noise and token-order sweeps
  if every.empty:
    raise UserError(f"every finished run under {runs_dir} is a learning-rate sweep run (eval.set = "
                    f"{collect.TUNING_SET!r}); the report needs runs scored on the validation set")
  if every["N"].isna().any():
    raise UserError(f"some finished runs lack {param_col} in {rundir.SUMMARY}; rerun their summary "
                    "or choose --params=total")
  pts = points.clean(every)
  manifest = tables.manifest_status(runs_dir, own.runs)
  records = points.point_records(claim, every)
  along = points.curve_points(claim, collected.curves, param_col)  # the frontier's points
  cross_pts, cross_records = ((along, points.curve_records(claim, along)) if not along.empty
                              else (pts, records))
  findings = dict(
      grid=dict(coverage.grid_summary(own.runs, manifest, collected.problems),
                also={d: len(c.runs) for d, c in extra.items()}),
      param_column=param_col,
      evaluation=coverage.evaluation_summary(claim, records),
      epochs=epochs.epoch_findings(pts, records),
      within_run_overfitting=epochs.within_run_overfitting(claim),
      crossover=critical.findings(cross_pts, cross_records, n_boot=n_boot, seed=seed, runs=claim),
      fits=law_fits.family_fits(pts, curves=points.single_epoch_curves(
          claim, collected.curves, param_col), n_boot=n_boot, seed=seed, grid=grid,
          target=target),
      double_descent=sweeps.double_descent(every, claim, collected.curves, records),
      orders=sweeps.orders(claim, collected.curves),
      lr_sweep=answer.lr_sweep(collected.runs),
      weight_decay=tuning.weight_decay_check(collected.runs),
  )
  best = answer.bests(pts, claim)
  findings["answer"] = dict(bests=best, stars=answer.stars(findings["fits"]),
                            unigram_floor=answer.unigram_floor(claim))
  findings["task"] = answer.task_over_training(best, claim, collected.curves, replicas)
  return collected, pts, to_jsonable(findings)


def write(out: pathlib.Path, collected, pts, findings: dict, *, plots: bool = True) -> dict:
  out.mkdir(parents=True, exist_ok=True)
  written = tables.write_tables(collected, out)
  pts.to_csv(out / "points.csv", index=False)
  return dict(write_report(out, collected, pts, findings, plots=plots),
              tables=[str(t) for t in written])


def write_report(out: pathlib.Path, collected, pts, findings: dict, *, plots: bool = True) -> dict:
  """Figures, fits.json, report.md and the one-page report.html (figures inline)."""
  from analysis.render import curves, plots as plots_mod, plots_sweeps  # matplotlib only when drawing
  figs = out / "figures"
  figures = ({**curves.all_figures(pts, collected.runs, collected.curves, findings, figs),
              **plots_mod.all_figures(pts, findings, figs),
              **plots_sweeps.all_figures(findings, figs)} if plots else {})
  reasons = {**curves.NOT_DRAWN, **plots_mod.NOT_DRAWN, **plots_sweeps.NOT_DRAWN}
  not_drawn = ({n: why for n, why in reasons.items() if n not in figures} if plots
               else {n: "figures were not drawn (--no_plots)" for n in reasons})
  findings = dict(findings, figures=figures, figures_not_drawn=not_drawn)
  (out / "fits.json").write_text(json.dumps(findings, indent=1))
  md = markdown.render(findings)
  (out / "report.md").write_text(md)
  (out / "report.html").write_text(html.render(md, out))
  return dict(figures=figures, fits=str(out / "fits.json"), report=str(out / "report.md"),
              html=str(out / "report.html"))


def redraw(report_dir: pathlib.Path, out: pathlib.Path, *, plots: bool = True) -> dict:
  """A committed report drawn again from its own fits.json, points.csv and tables: the figures,
  report.md and report.html in today's layout, every number as it was (no analysis is re-run).
  A unigram floor the fits predate is read from DIR/unigram_floor.json ({"value", "note"}: computed
  afterwards from the prepared data), else from the tables (absent there too: the report says so)."""
  fits = report_dir / "fits.json"
  if not fits.is_file():
    raise UserError(f"{report_dir} holds no fits.json; --redraw wants a directory written by "
                    "python -m analysis.report")
  findings = {k: v for k, v in json.loads(fits.read_text()).items()
              if k not in ("figures", "figures_not_drawn")}
  collected = tables.read_tables(report_dir)
  floor = report_dir / "unigram_floor.json"
  if (findings["answer"].get("unigram_floor") or {}).get("value") is None:
    findings["answer"]["unigram_floor"] = (
        json.loads(floor.read_text()) if floor.is_file()
        else to_jsonable(answer.unigram_floor(points.claim_runs(collected.runs))))
  pts = pd.read_csv(report_dir / "points.csv")
  out.mkdir(parents=True, exist_ok=True)
  return write_report(out, collected, pts, findings, plots=plots)


def main(argv: list[str] | None = None) -> int:
  ap = ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
  src = ap.add_mutually_exclusive_group(required=True)
  src.add_argument("--runs", help="grid workdir: one subdirectory per run")
  src.add_argument("--redraw", metavar="DIR", help="a report directory drawn again from its own "
                   "fits.json, points.csv and tables (figures, report.md, report.html; every number "
                   "as it was, no analysis re-run)")
  src.add_argument("--tables", help="re-analyse a committed report: a directory holding runs.csv "
                   "and curves.csv (no per-sequence losses: comparisons use independent SEs)")
  ap.add_argument("--also", action="append", default=[], metavar="DIR",
                  help="another grid analysed with --runs (its workdir, or a report directory's "
                  "tables), e.g. the learning-rate sweep the recipe came from; repeatable")
  ap.add_argument("--task_runs", help="grid workdir where some of these runs were trained again "
                  "with eval.task_every > 0: the task curves of the best runs come from there")
  ap.add_argument("--out", required=True, help="where tables, fits.json, figures, report.md go")
  ap.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples per fit (0: none)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--grid", choices=["full", "coarse"], default="full",
                  help="approach-3 starts: the 4,500-point Besiroglu grid or a 432-point subset")
  ap.add_argument("--params", choices=["non_embedding", "total"], default="non_embedding",
                  help="which parameter count is N in the fits")
  ap.add_argument("--datacons_target", choices=["envelope", "final"], default="envelope",
                  help="fit the data-constrained law on the epoch envelope (best loss within E "
                  "epochs) or on final losses")
  ap.add_argument("--no_plots", action="store_true")
  args = ap.parse_args(argv)

  def body():
    if args.n_boot < 0:
      raise UserError("--n_boot must be >= 0")
    if args.redraw:
      written = redraw(pathlib.Path(args.redraw), pathlib.Path(args.out), plots=not args.no_plots)
      print(f"wrote {written['report']} and {written['html']} (redrawn from {args.redraw})")
      return
    runs_dir = pathlib.Path(args.runs or args.tables)
    for d in args.also:
      if not pathlib.Path(d).is_dir():
        raise UserError(f"--also={d} is not a directory; pass a grid workdir or a report directory")
    if args.task_runs and not pathlib.Path(args.task_runs).is_dir():
      raise UserError(f"--task_runs={args.task_runs} is not a directory; pass the grid workdir of "
                      "the re-runs trained with eval.task_every > 0")
    committed = tables.read_tables(runs_dir) if args.tables else None
    collected, pts, findings = analyze(runs_dir, n_boot=args.n_boot, seed=args.seed,
                                       grid=args.grid, param_col=f"params_{args.params}",
                                       target=args.datacons_target, collected=committed,
                                       task_runs=pathlib.Path(args.task_runs) if args.task_runs else None,
                                       also=[pathlib.Path(d) for d in args.also])
    written = write(pathlib.Path(args.out), collected, pts, findings, plots=not args.no_plots)
    print(f"wrote {written['report']} ({findings['grid']['n_finished']} finished runs of "
          f"{findings['grid']['n_runs']})")

  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
