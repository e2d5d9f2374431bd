"""Figures of the sweeps beside the grid: double descent per axis, the token-order ablation, and the
learning-rate sweep."""

from __future__ import annotations

import pathlib

import numpy as np

from analysis.render import plots
from analysis.render.fmt import fam, tok
from analysis.render.plots import FAMILY_COLOR, _panels, plt

AXES = {"model": ("parameters N", "model-wise"), "sample": ("unique tokens U", "sample-wise"),
        "curve": ("epoch (evaluations of one run)", "epoch-wise within a run")}
NOT_DRAWN = {
    "dd_model": "needs a series of >= 3 model sizes at one U and E",
    "dd_sample": "needs a series of >= 3 unique budgets at one size and E",
    "dd_curve": "needs a run with a constant learning rate (configs/doubledescent.py mode=curve)",
    "orders": "needs AR runs at >= 2 values of ar.num_orders at one size and budget",
    "lr_sweep": "needs learning-rate sweep runs (config eval.set = 'tune')",
}


def dd_axis(series: list[dict], axis: str, out: pathlib.Path) -> list[pathlib.Path]:
  """Every series along one axis; a red triangle on each peak, the verdict in the legend."""
  mine = [s for s in series if s["axis"] == axis]
  if not mine:
    return []
  fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
  labelled = set()
  for s in mine:  # the legend names each peaked series, and each family's others once
    noisy = bool(s.get("label_noise"))
    where = (f"U={tok(s['unique_tokens'])} E={s['epochs']:g}" if axis == "model" else
             f"{s['model_size']} E={s['epochs']:g}" if axis == "sample" else s["run_name"])
    if s["peaks"]:
      label = (f"{fam(s['objective'])} {where}"
               f"{' noise ' + format(s['label_noise'], 'g') if noisy else ''}: peak")
    elif (s["objective"], noisy) not in labelled:
      labelled.add((s["objective"], noisy))
      label = f"{fam(s['objective'])}{' (label noise)' if noisy else ''}: no peak beyond errors"
    else:
      label = None
    ax.errorbar(s["x"], s["loss"], yerr=s["se"], fmt=("--" if noisy else "-") + "o", ms=3,
                color=FAMILY_COLOR.get(s["objective"], "gray"), alpha=0.8, label=label)
    for p in s["peaks"][:1]:
      ax.plot(p["x"], p["loss"], "v", ms=11, color="red", mec="k", zorder=5)
  ax.set_xscale("log")
  ax.set_xlabel(AXES[axis][0])
  ax.set_ylabel("validation loss (nats/token)")
  ax.set_title(f"Double descent, {AXES[axis][1]} (red ▼: peak beyond errors; dashed: label noise)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=6)
  return plots._save(fig, out, f"dd_{axis}")


def orders(groups: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
  if not groups:
    return []
  fig, axes = _panels(len(groups))
  for ax, g in zip(axes, groups):
    n_max = max(r["num_orders"] for r in g["runs"])
    cmap = plt.get_cmap("Blues")
    for r in g["runs"]:
      if r["objective"] == "ar":
        color = cmap(0.35 + 0.65 * np.log(r["num_orders"]) / max(np.log(n_max), 1e-9))
        label = f"AR N={r['num_orders']}"
      else:
        color, label = FAMILY_COLOR.get(r["objective"], "gray"), fam(r["objective"])
      ax.errorbar(r["epoch"], r["loss"], yerr=r["se"], fmt="-o", ms=2, color=color, label=label)
    _log_x_panel(ax, "epochs", "validation loss (left to right)",
                 f"{g['model_size']}, U = {tok(g['unique_tokens'])}")
  fig.suptitle("AR trained on N token orders vs diffusion")
  return plots._save(fig, out, "orders")


def _log_x_panel(ax, xlabel: str, ylabel: str, title: str) -> None:
  """The sweep panels' common dress: log x axis, labels, title, grid, legend."""
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)


def lr_sweep(sweep: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
  """Tuning loss vs learning rate, one panel per family, a line per size, the chosen rate starred."""
  fams = sorted({s["objective"] for s in sweep})
  if not fams:
    return []
  fig, axes = _panels(len(fams))
  for ax, f in zip(axes, fams):
    mine = [s for s in sweep if s["objective"] == f]
    for i, s in enumerate(mine):
      color = plt.get_cmap("Blues" if f == "ar" else "Oranges")(0.45 + 0.55 * i / max(len(mine) - 1, 1))
      lr = [p["lr"] for p in s["points"]]
      ax.errorbar(lr, [p["loss"] for p in s["points"]], yerr=[p["se"] for p in s["points"]],
                  fmt="-o", ms=3, color=color, label=s["model_size"])
      ax.plot(s["chosen_lr"], s["chosen_loss"], "*", ms=13, color=color, mec="k", zorder=5)
    _log_x_panel(ax, "peak learning rate", "tuning-set loss (best evaluation)", f"{fam(f)} (star: chosen)")
  fig.suptitle("Learning-rate sweep on the tuning set")
  return plots._save(fig, out, "lr_sweep")


def all_figures(findings: dict, out: pathlib.Path) -> dict[str, list[str]]:
  series = findings["double_descent"]["series"]
  made = {f"dd_{a}": dd_axis(series, a, out) for a in AXES}
  made["orders"] = orders(findings.get("orders", []), out)
  made["lr_sweep"] = lr_sweep(findings.get("lr_sweep", []), out)
  return {k: [str(p) for p in v] for k, v in made.items() if v}
