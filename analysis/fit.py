"""python -m analysis.fit --law=chinchilla|datacons|kaplan --csv=FILE [...]: constants as JSON.

Examples (reference data):
  python -m analysis.fit --law=chinchilla --csv=analysis/reference/chinchilla_besiroglu.csv \
      --drop_highest=5 --bootstrap=200
  python -m analysis.fit --law=datacons --csv=analysis/reference/datablations_runs_fit182.csv \
      --loss_col=val_loss --frozen_base --search=published
  python -m analysis.fit --law=kaplan --csv=FILE --bootstrap=200   # D = dataset size (tokens)
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from analysis.findings.law_fits import COARSE_AXES
from analysis.laws import approaches, checks, chinchilla, datacons, kaplan, multistart
from analysis.render.jsonable import to_jsonable
from dlmscale.commands.guard import ArgumentParser, cli_main
from dlmscale.errors import UserError

LOSS_GUESSES = ("loss", "val_loss", "final_eval_loss")


def _base_from(source: str, df, cols: dict, grid: str) -> tuple[dict, str]:
  """The five base constants for a frozen-base fit: published, refitted, or from a JSON file."""
  if source == "muennighoff_c4":
    return dict(datacons.MUENNIGHOFF_C4), "Muennighoff et al. C4 (published)"
  if source == "single_epoch":
    one = df[df[cols["d"]] <= df[cols["u"]] * (1 + 1e-9)]
    starts = None if grid == "full" else multistart.grid_starts(COARSE_AXES)
    f = chinchilla.fit(one[cols["n"]], one[cols["d"]], one[cols["loss"]], starts=starts)
    return {k: f.params[k] for k in chinchilla.PARAMS}, (
        f"approach 3 on the {len(one)} single-epoch rows")
  path = pathlib.Path(source)
  if not path.is_file():
    raise UserError(f"--frozen_base={source!r}: not 'muennighoff_c4', 'single_epoch' or an "
                    "existing JSON file with a, b, e, alpha, beta (or A, B, E, alpha, beta)")
  try:
    raw = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"--frozen_base file {source!r} is not JSON ({e})") from None
  raw = raw.get("params", raw)
  base = {}
  for k, big in (("a", "A"), ("b", "B"), ("e", "E")):
    if k in raw:
      base[k] = float(raw[k])
    elif big in raw:
      base[k] = float(np.log(raw[big]))
  for k in ("alpha", "beta"):
    if k in raw:
      base[k] = float(raw[k])
  missing = [k for k in chinchilla.PARAMS if k not in base]
  if missing:
    raise UserError(f"--frozen_base file {source!r} lacks {', '.join(missing)}")
  return base, f"from {source}"


def run(args) -> dict:
  df = checks.read_csv(args.csv)
  loss_col = args.loss_col
  if loss_col is None:
    loss_col = next((c for c in LOSS_GUESSES if c in df.columns), None)
    if loss_col is None:
      raise UserError(f"{args.csv} has none of the loss columns {', '.join(LOSS_GUESSES)}; "
                      f"name yours with --loss_col (columns: {', '.join(map(str, df.columns))})")
  cols = dict(n=args.n_col, d=args.d_col, loss=loss_col)
  if args.law == "datacons":
    cols["u"] = args.u_col
  if args.law == "kaplan" and (args.c_col or "C_flops" in df.columns):
    cols["c"] = args.c_col or "C_flops"
  checks.require_columns(df, cols, args.csv)
  for c in cols.values():
    df[c] = checks.numeric_column(df, c, args.csv)
  if args.drop_highest:
    if args.drop_highest >= len(df):
      raise UserError(f"--drop_highest={args.drop_highest} would drop all {len(df)} rows")
    df = df.sort_values(loss_col).iloc[:len(df) - args.drop_highest]
  n, d, loss = df[cols["n"]].to_numpy(), df[cols["d"]].to_numpy(), df[loss_col].to_numpy()
  out = dict(law=args.law, csv=str(args.csv), n_points=int(len(df)),
             columns=dict(cols, loss=loss_col))
  if args.law == "kaplan":
    c = df[cols["c"]].to_numpy() if "c" in cols else None
    out["compute"] = cols.get("c", "6 N D")
    out.update(kaplan.fit_all(n, d, loss, c, n_boot=args.bootstrap, seed=args.seed))
    if not any(out[f]["status"] == "ok" for f in kaplan.FORMS):
      raise UserError("no Kaplan law is identifiable from these rows: "
                      + "; ".join(f"L({f}): {out[f]['reason']}" for f in kaplan.FORMS))
    return out
  if args.law == "chinchilla":
    starts = None if args.grid == "full" else multistart.grid_starts(COARSE_AXES)
    f = chinchilla.fit(n, d, loss, starts=starts)
    alloc = chinchilla.allocation(f.params, 1.0)
    out.update(params=f.params, objective=f.objective, n_starts=f.n_starts,
               starts_at_best=f.n_at_best,
               allocation=dict(G=alloc["G"], N_opt_exponent=alloc["a_N_exponent"],
                               D_opt_exponent=alloc["b_D_exponent"]))
    if args.bootstrap:
      b = chinchilla.bootstrap(n, d, loss, f, n_boot=args.bootstrap, seed=args.seed)
      out["bootstrap"] = dict(se=b.se, ci=b.ci, level=b.level, n_boot=b.n_boot)
    try:
      out["approach2"] = approaches.approach2(n, d, loss)
    except UserError as e:
      out["approach2"] = dict(status="not available", reason=str(e))
    return out
  u = df[cols["u"]].to_numpy()
  base, base_note = (None, "fitted jointly")
  if args.frozen_base:
    base, base_note = _base_from(args.frozen_base, df, cols, args.grid)
  spec = datacons.make_spec(base=base, tie_exponents=args.tie_exponents,
                                 fit_rn=not args.no_rn)
  f = datacons.fit(n, d, u, loss, spec=spec, search=args.search)
  out.update(f.named(), base=base_note)
  out["other_minima"] = [{k: v for k, v in m.items() if k != "x"} for m in f.other_minima]
  if args.bootstrap:
    b = datacons.bootstrap(n, d, u, loss, f, spec, n_boot=args.bootstrap, seed=args.seed)
    out["bootstrap"] = {k: v for k, v in b.items() if k != "samples"}
  return out


def main(argv: list[str] | None = None) -> int:
  ap = ArgumentParser(prog="python -m analysis.fit",
                               description="Fit a scaling law to a CSV; prints JSON.")
  ap.add_argument("--law", required=True, choices=["chinchilla", "datacons", "kaplan"])
  ap.add_argument("--csv", required=True)
  ap.add_argument("--n_col", default="N_params", help="parameter-count column")
  ap.add_argument("--d_col", default="D_tokens", help="tokens-seen column (kaplan: the dataset "
                                                       "size, runs early-stopped)")
  ap.add_argument("--u_col", default="U_unique_tokens", help="unique-tokens column (datacons)")
  ap.add_argument("--c_col", default=None, help="kaplan: compute column (default C_flops when "
                                                 "present, else 6 N D)")
  ap.add_argument("--loss_col", default=None, help=f"loss column (default: first of "
                                                    f"{', '.join(LOSS_GUESSES)})")
  ap.add_argument("--drop_highest", type=int, default=0,
                  help="drop the K highest-loss rows first (Besiroglu et al. drop 5)")
  ap.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for SEs/CIs")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--grid", choices=["full", "coarse"], default="full",
                  help="approach-3 starts: 4,500-point Besiroglu grid or a 432-point subset")
  ap.add_argument("--frozen_base", nargs="?", const="muennighoff_c4", default=None,
                  help="datacons: freeze E, A, B, alpha, beta: 'muennighoff_c4' (default when "
                       "given), 'single_epoch' (approach 3 on rows with D <= U), or a JSON file")
  ap.add_argument("--search", choices=sorted(datacons.SEARCHES), default="wide",
                  help="datacons R* search range: wide [0.01, 1e5] or published [0.01, 20]")
  ap.add_argument("--tie_exponents", action="store_true", help="datacons joint fit: beta = alpha")
  ap.add_argument("--no_rn", action="store_true", help="datacons: hold R_N* fixed (no excess-"
                                                       "parameter runs)")
  args = ap.parse_args(argv)

  def body():
    if args.bootstrap < 0 or args.drop_highest < 0:
      raise UserError("--bootstrap and --drop_highest must be >= 0")
    print(json.dumps(to_jsonable(run(args)), indent=1))

  return cli_main(body)


if __name__ == "__main__":
  sys.exit(main())
