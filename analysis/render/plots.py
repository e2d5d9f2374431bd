"""The study's figures (PNG for the report, PDF for papers), drawn from the points table and fits.

Colour is the family (AR blue, MDM orange) everywhere; within a family, shade is model size.
Every function returns the paths it wrote and draws nothing when it has no data (NOT_DRAWN says
why, for the report). Before saving, titles wider than their panel (or the figure) are wrapped, so
nothing is cut at the canvas edge whatever the panel count.
"""

from __future__ import annotations

import pathlib
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.laws import chinchilla, datacons
from analysis.render.fmt import tok

FAMILY_COLOR = {"ar": "tab:blue", "mdm": "tab:orange"}
FAMILY_LABEL = {"ar": "AR", "mdm": "MDM"}
FAMILY_CMAP = {"ar": "Blues", "mdm": "Oranges"}
# Why a figure is absent from a report: the condition under which its function draws nothing.
NOT_DRAWN = {
    "loss_vs_flops": "no finished runs",
    "loss_vs_size": "needs runs of at least two model sizes",
    "law_contours": "needs a Chinchilla fit (approach 3) for at least one family, and none was identifiable",
    "c_crit": "needs a budget at which MDM's loss crosses below AR's, and there is none",
    "residuals": "needs at least one fitted law (Chinchilla or data-constrained), and none was identifiable",
}


def _titles(fig) -> list[tuple[matplotlib.text.Text, float]]:
  """Each non-empty title with the width (pixels) it must fit in: its panel's, or the figure's."""
  out = [(fig._suptitle, 0.98 * fig.bbox.width)] if fig._suptitle is not None else []
  for ax in fig.axes:
    if ax.get_visible():
      out += [(t, ax.bbox.width) for t in (ax.title, ax._left_title, ax._right_title)]
  return [(t, w) for t, w in out if t.get_text()]


def _renderer(fig, draw: bool):
  """A renderer to measure text with, after laying the panels out (draw: after drawing it all)."""
  canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
  if draw:
    canvas.draw()
  elif fig.get_layout_engine() is not None:
    fig.get_layout_engine().execute(fig)  # panel widths without rasterising every artist
  return canvas.get_renderer()


def fit_titles(fig) -> None:
  """Wraps every title that is wider than its room onto more lines (a single-panel figure's
  suptitle, a long panel title), so no title runs past the canvas edge or into its neighbour."""
  renderer = _renderer(fig, draw=False)
  for text, room in _titles(fig):
    words = " ".join(text.get_text().split())
    width = len(words)
    while text.get_window_extent(renderer).width > room and width > 8:
      width = int(width * 0.85)
      text.set_text(textwrap.fill(words, width, break_long_words=False))


def text_outside_canvas(fig) -> list[str]:
  """Titles, axis labels and legends whose drawn extent leaves the canvas (what a reader sees cut)."""
  renderer = _renderer(fig, draw=True)
  width, height = fig.bbox.width, fig.bbox.height
  items = [(t.get_text(), t) for t, _ in _titles(fig)]
  for ax in fig.axes:
    if ax.get_visible():
      items += [(a.get_text(), a) for a in (ax.xaxis.label, ax.yaxis.label) if a.get_text()]
      items += [("legend", ax.get_legend())] if ax.get_legend() else []
  bad = []
  for label, artist in items:
    bb = artist.get_window_extent(renderer)
    if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > width + 1 or bb.y1 > height + 1:
      bad.append(label)
  return bad


def _save(fig, out: pathlib.Path, name: str) -> list[pathlib.Path]:
  out.mkdir(parents=True, exist_ok=True)
  fit_titles(fig)
  paths = [out / f"{name}.png", out / f"{name}.pdf"]
  fig.savefig(paths[0], dpi=130)
  fig.savefig(paths[1], metadata={"CreationDate": None})  # the same figure, the same bytes
  plt.close(fig)
  return paths


def _panels(n: int, width: float = 4.6, height: float = 3.6):
  cols = min(n, 3)
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:n])


def _shades(family: str, sizes: list) -> dict:
  cmap = plt.get_cmap(FAMILY_CMAP.get(family, "Greys"))
  return {s: cmap(0.4 + 0.6 * i / max(len(sizes) - 1, 1)) for i, s in enumerate(sizes)}


def _size_order(pts: pd.DataFrame) -> list:
  return list(pts.groupby("model_size")["N"].median().sort_values().index)


def loss_vs_flops(pts: pd.DataFrame, cross: dict, out: pathlib.Path) -> list[pathlib.Path]:
  budgets = sorted(pts["unique_tokens"].unique())
  if not budgets:
    return []
  fig, axes = _panels(len(budgets))
  by_u = {b["unique_tokens"]: b for b in cross.get("per_budget", [])}
  for ax, u in zip(axes, budgets):
    g = pts[pts["unique_tokens"] == u]
    for fam, gf in g.groupby("objective"):
      ax.errorbar(gf["C"], gf["loss"], yerr=gf["se"], fmt="o", ms=4, alpha=0.7,
                  color=FAMILY_COLOR.get(fam, "gray"), label=f"{FAMILY_LABEL.get(fam, fam)} runs")
      fr = by_u.get(float(u), {}).get("frontier", {}).get(fam)
      if fr:
        ax.plot(fr["C"], fr["loss"], "-", lw=2, color=FAMILY_COLOR.get(fam, "gray"),
                label=f"{FAMILY_LABEL.get(fam, fam)} best so far")
    b = by_u.get(float(u), {})
    if b.get("status") == "crosses":
      ax.axvline(b["c_crit"], color="k", ls="--", lw=1)
      ax.annotate(f"C_crit\n{b['c_crit']:.2g}", xy=(b["c_crit"], 1.0),
                  xycoords=("data", "axes fraction"), xytext=(-4, -4),
                  textcoords="offset points", ha="right", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_title(f"U = {tok(u)} unique tokens")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=7)
  fig.suptitle("Validation loss vs compute (dashed: diffusion overtakes AR)")
  return _save(fig, out, "loss_vs_flops")


def loss_vs_size(pts: pd.DataFrame, dd: dict, out: pathlib.Path,
                 param_label: str = "non-embedding") -> list[pathlib.Path]:
  budgets = sorted(pts["unique_tokens"].unique())
  if not budgets or pts["model_size"].nunique() < 2:
    return []
  fig, axes = _panels(len(budgets))
  epochs = sorted(pts["epochs"].unique())
  for ax, u in zip(axes, budgets):
    g = pts[pts["unique_tokens"] == u]
    for fam, gf in g.groupby("objective"):
      shade = _shades(fam, epochs)
      for e, ge in gf.groupby("epochs"):
        ge = ge.sort_values("N")
        ax.errorbar(ge["N"], ge["loss"], yerr=ge["se"], fmt=("-" if fam == "ar" else "--") + "o",
                    ms=3, color=shade[e], label=f"{FAMILY_LABEL.get(fam, fam)} E={e:g}")
    for s in dd.get("series", []):
      if s["axis"] == "model" and s["unique_tokens"] == float(u) and not s.get("label_noise"):
        for p in s["peaks"][:1]:
          ax.plot(p["x"], p["loss"], "v", ms=10, color="red", mec="k")
    ax.set_xscale("log")
    ax.set_title(f"U = {tok(u)}  (red ▼: double-descent peak, if any)")
    ax.set_xlabel(f"parameters ({param_label})")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=6, ncol=2)
  fig.suptitle("Model-wise view: validation loss vs model size")
  return _save(fig, out, "loss_vs_size")


def law_contours(pts: pd.DataFrame, chin: dict, out: pathlib.Path) -> list[pathlib.Path]:
  fams = [f for f, v in chin.items() if v.get("status") == "ok"]
  if not fams:
    return []
  fig, axes = _panels(len(fams), width=5.2, height=4.2)
  for ax, fam in zip(axes, fams):
    p = chin[fam]["params"]
    g = pts[pts["objective"] == fam]
    ln = np.log10(g["N"].to_numpy())
    ld = np.log10(g["D"].to_numpy())
    n_grid = np.logspace(ln.min() - 0.5, ln.max() + 0.5, 120)
    d_grid = np.logspace(ld.min() - 0.5, ld.max() + 0.5, 120)
    nn, dd = np.meshgrid(n_grid, d_grid)
    ll = chinchilla.predict(p, nn, dd)
    levels = np.quantile(ll, np.linspace(0.02, 0.98, 14))
    cs = ax.contour(nn, dd, ll, levels=np.unique(levels), cmap="viridis", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="%.2f")
    one = g["epochs"] <= 1.0 + 1e-9
    sc = ax.scatter(g.loc[one, "N"], g.loc[one, "D"], c=g.loc[one, "loss"], cmap="viridis",
                    norm=cs.norm, edgecolor="k", s=30, label="single-epoch runs (fitted)")
    ax.scatter(g.loc[~one, "N"], g.loc[~one, "D"], c=g.loc[~one, "loss"], cmap="viridis",
               norm=cs.norm, marker="s", edgecolor="gray", s=18, label="repeated-data runs")
    c_line = 6 * n_grid * np.sqrt(d_grid[0] * d_grid[-1])
    alloc = chinchilla.allocation(p, np.logspace(np.log10(c_line.min()),
                                                      np.log10(c_line.max()), 50))
    ax.plot(alloc["N_opt"], alloc["D_opt"], "r-", lw=1.5, label="compute-optimal N, D")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n_grid[0], n_grid[-1])
    ax.set_ylim(d_grid[0], d_grid[-1])
    ax.set_xlabel("parameters N")
    ax.set_ylabel("tokens D")
    ax.set_title(f"{FAMILY_LABEL.get(fam, fam)}: L = E + A/N^a + B/D^b "
                 f"(a={p['alpha']:.2f}, b={p['beta']:.2f})", fontsize=9)
    fig.colorbar(sc, ax=ax, label="validation loss")
  axes[0].legend(fontsize=6)
  return _save(fig, out, "law_contours")


def c_crit(cross: dict, out: pathlib.Path) -> list[pathlib.Path]:
  pts = [b for b in cross.get("per_budget", []) if b.get("status") == "crosses"]
  if not pts:
    return []
  fig, ax = plt.subplots(figsize=(5.2, 4.0), layout="constrained")
  six = cross.get("c_crit_6nd") or {}  # the published law's convention: 6ND, N with the embedding
  if six:
    u, c = np.array([float(k) for k in six]), np.array(list(six.values()))
  else:
    u = np.array([b["unique_tokens"] for b in pts])
    c = np.array([b["c_crit"] for b in pts])
  ax.plot(u, c, "ko", label="measured crossing (6ND, N with embedding)" if six else "measured crossing (counted)")
  uu = np.logspace(np.log10(u.min()) - 0.3, np.log10(u.max()) + 0.3, 50)
  fit = cross.get("c_crit_fit") or {}
  if fit.get("status") == "ok":
    ax.plot(uu, fit["coef"] * uu ** fit["exponent"], "k-",
            label=f"fit: C = {fit['coef_at_1e6']:.2e} (U/1e6)^{fit['exponent']:.2f}")
  ref = cross["reference"]
  ax.plot(uu, ref["coef_at_1e6"] * (uu / 1e6) ** ref["exponent"], ":", color="gray",
          label="Prabhudesai et al. 2025")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("unique tokens U")
  ax.set_ylabel("critical compute C_crit (FLOPs)")
  ax.set_title("Compute above which diffusion beats AR")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  return _save(fig, out, "c_crit")


def residuals(pts: pd.DataFrame, fits: dict, out: pathlib.Path) -> list[pathlib.Path]:
  dcons = {f: v for f, v in fits["datacons"].items() if v.get("status") == "ok"}
  chin = {f: v for f, v in fits["chinchilla"].items() if v.get("status") == "ok"}
  if not dcons and not chin:
    return []
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
  for fam, v in chin.items():
    g = pts[(pts["objective"] == fam) & (pts["epochs"] <= 1.0 + 1e-9)]
    r = np.log(g["loss"]) - np.log(chinchilla.predict(v["params"], g["N"], g["D"]))
    axes[0].plot(g["N"], r, "o", color=FAMILY_COLOR.get(fam, "gray"),
                 label=FAMILY_LABEL.get(fam, fam))
  for fam, v in dcons.items():
    g = pts[pts["objective"] == fam]
    pred = datacons.predict(v["params"], g["N"], g["D"], g["unique_tokens"])
    axes[1].plot(g["epochs"], np.log(g["loss"]) - np.log(pred), "o",
                 color=FAMILY_COLOR.get(fam, "gray"), label=FAMILY_LABEL.get(fam, fam))
  for ax, title, xl in ((axes[0], "Chinchilla fit (single-epoch points)", "parameters N"),
                        (axes[1], "data-constrained fit (all points)", "epochs")):
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xl)
    ax.set_ylabel("log observed - log predicted")
    ax.grid(alpha=0.3)
    if ax.lines[1:]:
      ax.legend(fontsize=7)
  return _save(fig, out, "residuals")


def all_figures(pts: pd.DataFrame, findings: dict, out: pathlib.Path) -> dict[str, list[str]]:
  made = {
      "loss_vs_flops": loss_vs_flops(pts, findings["crossover"], out),
      "loss_vs_size": loss_vs_size(pts, findings["double_descent"], out,
                                   findings.get("param_column", "params_non_embedding")
                                   .removeprefix("params_").replace("_", "-")),
      "law_contours": law_contours(pts, findings["fits"]["chinchilla"], out),
      "c_crit": c_crit(findings["crossover"], out),
      "residuals": residuals(pts, findings["fits"], out),
  }
  return {k: [str(p) for p in v] for k, v in made.items() if v}
