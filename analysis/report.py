"""python -m analysis.report --runs=DIR --out=DIR: tables, fits.json, figures and report.md.

Works on a partial grid: unfinished runs are listed (and compared with DIR/grid_manifest.json when
present), fits that lack evidence say so instead of failing. Only a grid with no finished run at all
is an error.
"""

from __future__ import annotations

import json
import pathlib
import sys

from analysis import collect, report_md, study, study_fits
from analysis.jsonable import to_jsonable
from dlmscale import cli_guard
from dlmscale.errors import UserError, cli_main


def analyze(runs_dir: pathlib.Path, *, n_boot: int = 200, seed: int = 0, grid: str = "full",
            param_col: str = "params_non_embedding") -> tuple[collect.Collected, object, dict]:
  collected = collect.collect(runs_dir)
  collect.require_finished(collected, runs_dir)
  pts = study.points(collected.runs, param_col=param_col)
  if pts["N"].isna().any():
    raise UserError(f"some finished runs lack {param_col} in summary.json; rerun their summary "
                    "or choose --params=total")
  manifest = collect.manifest_status(runs_dir, collected.runs)
  findings = dict(
      grid=study.grid_summary(collected.runs, manifest, collected.problems),
      param_column=param_col,
      epochs=study.epoch_findings(pts),
      within_run_overfitting=study.within_run_overfitting(collected.runs),
      crossover=study.crossover_findings(pts),
      fits=study_fits.family_fits(pts, curves=study.single_epoch_curves(
          collected.runs, collected.curves, param_col), n_boot=n_boot, seed=seed, grid=grid),
      double_descent=study.double_descent_findings(pts, collected.curves, collected.runs),
      downstream=study.downstream_findings(pts),
  )
  return collected, pts, to_jsonable(findings)


def write(out: pathlib.Path, collected, pts, findings: dict, *, plots: bool = True) -> dict:
  from analysis import plots as plots_mod  # matplotlib only when drawing
  out.mkdir(parents=True, exist_ok=True)
  tables = collect.write_tables(collected, out)
  pts.to_csv(out / "points.csv", index=False)
  figures = plots_mod.all_figures(pts, findings, out / "figures") if plots else {}
  findings = dict(findings, figures=figures)
  (out / "fits.json").write_text(json.dumps(findings, indent=1))
  (out / "report.md").write_text(report_md.render(findings))
  return dict(tables=[str(t) for t in tables], figures=figures,
              fits=str(out / "fits.json"), report=str(out / "report.md"))


def main(argv: list[str] | None = None) -> int:
  ap = cli_guard.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
  ap.add_argument("--runs", required=True, help="grid workdir: one subdirectory per run")
  ap.add_argument("--out", required=True, help="where tables, fits.json, figures, report.md go")
  ap.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples per fit (0: none)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--grid", choices=["full", "coarse"], default="full",
                  help="approach-3 starts: the 4,500-point Besiroglu grid or a 432-point subset")
  ap.add_argument("--params", choices=["non_embedding", "total"], default="non_embedding",
                  help="which parameter count is N in the fits")
  ap.add_argument("--no_plots", action="store_true")
  args = ap.parse_args(argv)

  def body():
    if args.n_boot < 0:
      raise UserError("--n_boot must be >= 0")
    runs_dir = pathlib.Path(args.runs)
    collected, pts, findings = analyze(runs_dir, n_boot=args.n_boot, seed=args.seed,
                                       grid=args.grid, param_col=f"params_{args.params}")
    written = write(pathlib.Path(args.out), collected, pts, findings, plots=not args.no_plots)
    print(f"wrote {written['report']} ({findings['grid']['n_finished']} finished runs of "
          f"{findings['grid']['n_runs']})")

  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
