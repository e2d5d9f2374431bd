"""report.md sections for the sweeps beside the grid: double descent and the token-order ablation."""

from __future__ import annotations

from analysis.findings import paired
from analysis.findings.sweeps import NO_PEAK
from analysis.render.fmt import fam, pm, tok

AXIS_TITLE = {"model": "Model-wise", "sample": "Sample-wise", "epoch": "Epoch-wise (separate runs)",
              "curve": "Epoch-wise (within one run)"}
MAX_ROWS = 40


def _where(s: dict) -> str:
  """What a series holds fixed, in words."""
  noise = f", label noise {s['label_noise']:g}" if s.get("label_noise") else ""
  orders = f", {int(s['num_orders'])} orders" if s.get("num_orders", 1) not in (1, None) else ""
  if s["axis"] == "model":
    kind = "widths at one depth" if s.get("width_only") else "size ladder"
    return f"U = {tok(s['unique_tokens'])}, E = {s['epochs']:g} ({kind}){noise}{orders}"
  if s["axis"] == "sample":
    return f"{s['model_size']}, E = {s['epochs']:g}{noise}{orders}"
  if s["axis"] == "epoch":
    return f"{s['model_size']}, U = {tok(s['unique_tokens'])}{noise}{orders}"
  return f"run {s['run_name']}{noise}"


def _x(axis: str, v: float) -> str:
  return {"model": f"N = {v:.3g}", "sample": f"U = {tok(v)}"}.get(axis, f"E = {v:.3g}")


def _verdict(s: dict) -> str:
  if not s["peaks"]:
    return NO_PEAK
  p = s["peaks"][0]
  z = ("no standard errors recorded" if p["rise_z"] is None or p["fall_z"] is None
       else f"{min(p['rise_z'], p['fall_z']):.1f} SE")
  return (f"peak at {_x(s['axis'], p['x'])} (loss {p['loss']:.3f}): rises {p['rise']:.3f} above "
          f"{_x(s['axis'], p['x_before'])}, falls {p['fall']:.3f} by {_x(s['axis'], p['x_after'])} "
          f"({z})")


def dd_section(dd: dict) -> list[str]:
  lines = ["## Double descent", "",
           f"A peak counts when {dd['criterion']}. Every series of >= 3 points is listed.", ""]
  series = dd["series"]
  grid_figures = ["![loss vs size](figures/loss_vs_size.png)", ""]
  if not series:
    return lines + ["No series of >= 3 points along model size, unique tokens or epochs; nothing "
                    "to test.", ""] + grid_figures
  ordered = sorted(series, key=lambda s: (not s["peaks"], list(AXIS_TITLE).index(s["axis"]),
                                          s["objective"], _where(s)))
  lines += ["| sweep | family | held fixed | points | errors | verdict |", "|---|---|---|---|---|---|"]
  for s in ordered[:MAX_ROWS]:
    kind = "paired" if s["se_kind"] == paired.PAIRED else "independent"
    lines.append(f"| {AXIS_TITLE[s['axis']]} | {fam(s['objective'])} | {_where(s)} | {len(s['x'])} "
                 f"| {kind} | {_verdict(s)} |")
  if len(ordered) > MAX_ROWS:
    rest = ordered[MAX_ROWS:]
    lines.append(f"\n{len(rest)} more series, {sum(bool(s['peaks']) for s in rest)} with a peak "
                 "(all in fits.json).")
  n_peak = sum(bool(s["peaks"]) for s in series)
  lines += ["", f"{n_peak} of {len(series)} series show a peak beyond errors." if n_peak else
            f"None of the {len(series)} series shows a peak beyond errors.", ""]
  lines += grid_figures
  for axis in ("model", "sample", "curve"):
    lines += [f"![{AXIS_TITLE[axis]}](figures/dd_{axis}.png)", ""]
  return lines


def orders_section(groups: list[dict]) -> list[str]:
  lines = ["## AR on N token orders (Prabhudesai et al.'s ablation)", ""]
  if not groups:
    return lines + ["No AR runs with several values of ar.num_orders at one size and budget "
                    "(configs/orders.py).", ""]
  lines.append("Every run is evaluated left to right. 'vs N = 1' is the final loss minus plain "
               "AR's, ± its SE (paired over the eval sequences where both saved them); a "
               "difference whose 95% interval contains 0 is inconclusive.")
  for g in groups:
    lines += ["", f"**{g['model_size']}, U = {tok(g['unique_tokens'])}, E = {g['epochs']:g}**", "",
              "| run | best loss (epoch) | final loss | vs N = 1 |", "|---|---|---|---|"]
    for r in g["runs"]:
      who = f"AR, N = {r['num_orders']}" if r["objective"] == "ar" else fam(r["objective"])
      vs = "—"
      if "vs_plain" in r:
        v = r["vs_plain_verdict"]
        word = {"negative": "lower", "positive": "higher"}.get(v, v)
        vs = f"{pm(r['vs_plain'], r['vs_plain_se'])} ({word})"
      lines.append(f"| {who} (seed {r['seed']}) | {pm(r['best_loss'], r['best_se'])} "
                   f"(E {r['best_epoch']:.3g}) | {pm(r['final_loss'], r['final_se'])} | {vs} |")
  return lines + ["", "![token orders](figures/orders.png)", ""]
