"""The report's first figure: validation loss along every evaluation of each run against epochs, per
budget (a WSD trunk's curve, its branches' annealed ends as open circles), each family's best
starred, the unigram floor of the validation set drawn (its caption, with the AR - MDM gap at the
two bests, is answer.curves_caption).

Runs whose curves the tables lack are drawn by their end points (the points table) alone.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from analysis.findings import points
from analysis.render import plots
from analysis.render.fmt import FAM, tok

NOT_DRAWN = {"loss_vs_epochs": "no finished runs"}


def claim_curves(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
  """Eval rows of the finished runs behind the study's claims: scored on the validation set, no
  label noise, plain left-to-right AR (the runs the points table averages)."""
  keep = points.clean(points.claim_runs(runs[runs["finished"].astype(bool)]))
  c = curves[curves["run_name"].isin(set(keep["run_name"])) & (curves["split"] == "eval")]
  c = c.assign(epoch=pd.to_numeric(c["epoch"], errors="coerce"),
               loss=pd.to_numeric(c["loss"], errors="coerce"))
  return c[np.isfinite(c["loss"]) & (c["epoch"] > 0)]


def _draw_budget(ax, pts: pd.DataFrame, curves: pd.DataFrame, sizes: list, best: dict | None):
  for fam in sorted(set(pts["objective"]) | set(curves["objective"])):
    shade = plots._shades(fam, sizes)
    ls = "-" if fam == "ar" else "--"
    for size in [s for s in sizes if s in set(pts.loc[pts["objective"] == fam, "model_size"])
                 | set(curves.loc[curves["objective"] == fam, "model_size"])]:
      label = f"{FAM.get(fam, fam)} {size}"
      runs = curves[(curves["objective"] == fam) & (curves["model_size"] == size)]
      for r in sorted((g for _, g in runs.groupby("run_name")), key=len, reverse=True):  # curves first
        r = r.sort_values("epoch")
        if len(r) > 1:
          ax.plot(r["epoch"], r["loss"], ls, marker=".", ms=3, lw=1.1, color=shade[size], label=label)
        else:  # one evaluation: a WSD branch's annealed end (or a run too short for a curve)
          ax.plot(r["epoch"], r["loss"], "o", ms=5, mfc="white", mec=shade[size], mew=1.3, label=label)
        label = None
      ends = pts[(pts["objective"] == fam) & (pts["model_size"] == size)
                 & ~pts["runs"].astype(str).map(lambda n: bool(set(n.split(",")) & set(runs["run_name"])))]
      if len(ends):  # grid points without a curve in the tables: their end points only
        ax.errorbar(ends["epochs"], ends["loss"], yerr=ends["se"], fmt="o", ms=4,
                    color=shade[size], label=label)
  for fam, x in ((best or {}).get("families") or {}).items():
    ax.plot(x["best_epoch"], x["loss"], "*", ms=15, color=plots.FAMILY_COLOR.get(fam, "gray"),
            mec="k", mew=0.7, zorder=5)
    ax.annotate(f"{FAM.get(fam, fam)} best {x['loss']:.2f}", (x["best_epoch"], x["loss"]),
                xytext=(0, 8), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))


def loss_vs_epochs(pts: pd.DataFrame, curves: pd.DataFrame, findings: dict,
                   out: pathlib.Path) -> list[pathlib.Path]:
  budgets = sorted(set(pts["unique_tokens"]) | set(curves["unique_tokens"].dropna()))
  if not budgets:
    return []
  sizes = plots._size_order(pts) if len(pts) else sorted(curves["model_size"].unique())
  sizes += [s for s in curves["model_size"].unique() if s not in sizes]
  bests = {float(b["unique_tokens"]): b for b in findings.get("answer", {}).get("bests", [])}
  floor = findings.get("answer", {}).get("unigram_floor", {}).get("value")
  fig, axes = plots._panels(len(budgets), width=5.0, height=3.9)
  for ax, u in zip(axes, budgets):
    _draw_budget(ax, pts[pts["unique_tokens"] == u], curves[curves["unique_tokens"] == u], sizes,
                 bests.get(float(u)))
    if floor is not None:
      ax.axhline(floor, color="0.35", ls=":", lw=1.2, label=f"unigram floor {floor:.2f}")
    ax.plot([], [], "*", ms=10, color="0.5", mec="k", label="family's best")
    if "annealed" in pts and pts["annealed"].astype(bool).any():
      ax.plot([], [], "o", ms=5, mfc="white", mec="0.4", mew=1.3, label="annealed branch end")
    ax.set_xscale("log")
    ax.set_title(f"U = {tok(u)} unique tokens")
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=6, ncol=2)
  fig.suptitle("Validation loss along every evaluation of each run (solid AR, dashed MDM)")
  return plots._save(fig, out, "loss_vs_epochs")


def all_figures(pts: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame, findings: dict,
                out: pathlib.Path) -> dict[str, list[str]]:
  made = loss_vs_epochs(pts, claim_curves(runs, curves), findings, out)
  return {"loss_vs_epochs": [str(p) for p in made]} if made else {}
