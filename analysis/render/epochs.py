"""report.md's epochs section: where validation loss is lowest along E, and the rise after it."""

from __future__ import annotations

from analysis.findings.epochs import CURVE_BASIS
from analysis.render.fmt import FAM, pm, tok


def epochs_section(ep: dict, within: list[dict]) -> list[str]:
  lines = ["## Epochs: where each family's validation loss is best", ""]
  if not ep["per_budget"]:
    return lines + ["No finished runs.", ""]
  budgets = sorted(ep["per_budget"], key=lambda b: (b["unique_tokens"], b["objective"]))
  by_curve = any(b.get("basis") == CURVE_BASIS for b in budgets)
  lines += _epoch_table_by_curve(budgets) if by_curve else _epoch_table_by_final(budgets)
  lines.append("")
  if by_curve:
    lines += ["Each run is read at its best evaluation along its curve (seeds averaged), so a run "
              "that overfitted after a mid-run best counts by that best; the rise is from it to "
              "the end of the same run.", ""]
  for u in sorted({b["unique_tokens"] for b in budgets}):
    here = [b for b in budgets if b["unique_tokens"] == u]
    parts = [_epoch_by_curve(b) if b.get("basis") == CURVE_BASIS else _epoch_by_final(b) for b in here]
    lines.append(f"At U = {tok(u)}: " + "; ".join(parts) + ".")
    lines.append("")
  sig = [w for w in within if w["rise_se"] > 0 and w["rise"] > 2 * w["rise_se"]]
  for fam in sorted({w["objective"] for w in sig}):
    runs = sorted((w for w in sig if w["objective"] == fam), key=lambda w: -w["rise"])
    top = runs[0]
    lines.append(f"Within single runs, {len(runs)} {FAM.get(fam, fam)} run(s) ended significantly "
                 f"above their best validation loss (overfitting onset inside the run); the "
                 f"largest: {top['run_name']}, best at epoch {top['best_epoch']:.3g} of "
                 f"{top['epochs']:g}, then up {pm(top['rise'], top['rise_se'])}.")
    lines.append("")
  return lines


def _epoch_table_by_final(budgets: list[dict]) -> list[str]:
  """Runs compared by their final losses: the best E and the rise to the largest E tried."""
  out = ["| U | family | best size | best E | best loss | loss at max E | rise after best |",
         "|---|---|---|---|---|---|---|"]
  for b in budgets:
    out.append(f"| {tok(b['unique_tokens'])} | {FAM.get(b['objective'], b['objective'])} | "
               f"{b['model_size']} | {b['best_epochs']:g} | {pm(b['best_loss'], b['best_se'])} |"
               f" E={b['last_epochs']:g} | {pm(b['rise_after'], b['rise_after_se'])} |")
  return out


VERDICT_WORDS = {"significant": "significant rise (> 2 SE)",
                 "inconclusive": "within 2 SE, inconclusive", "best at the end": "best at the end"}


def _epoch_table_by_curve(budgets: list[dict]) -> list[str]:
  """Runs read at their best evaluation: where it was, and the rise to the same run's end."""
  out = ["| U | family | best size | best at epoch | best loss | loss at end of run | "
         "rise after best | verdict |", "|---|---|---|---|---|---|---|---|"]
  for b in budgets:
    out.append(f"| {tok(b['unique_tokens'])} | {FAM.get(b['objective'], b['objective'])} | "
               f"{b['model_size']} | {b['best_epoch']:.3g} of {b['last_epochs']:g} | "
               f"{pm(b['best_loss'], b['best_se'])} | {pm(b['last_loss'], b.get('last_se'))} | "
               f"{pm(b['rise_after'], b['rise_after_se'])} | {VERDICT_WORDS[b['verdict']]} |")
  return out


def _epoch_by_final(b: dict) -> str:
  fam = FAM.get(b["objective"], b["objective"])
  if b["best_epochs"] >= b["last_epochs"]:
    return (f"{fam}'s final loss is lowest at the largest epoch count tried "
            f"(E = {b['best_epochs']:g}, loss {pm(b['best_loss'], b['best_se'])}, "
            f"{b['model_size']}; runs compared by their final losses, so a run that "
            "overfitted after a mid-run best counts here by its end: see within single runs below)")
  sig = b["rise_after_se"] and b["rise_after"] > 2 * b["rise_after_se"]
  return (f"{fam} is best at E = {b['best_epochs']:g} ({b['model_size']}, loss "
          f"{pm(b['best_loss'], b['best_se'])}) and rises by "
          f"{pm(b['rise_after'], b['rise_after_se'])} by E = {b['last_epochs']:g}"
          f"{' (significant)' if sig else ' (within 2 SE, inconclusive)'}")


def _epoch_by_curve(b: dict) -> str:
  """One family's best evaluation at one budget, worded by the rise's interval."""
  fam = FAM.get(b["objective"], b["objective"])
  run = f"its E = {b['last_epochs']:g} run"
  where = f"{b['model_size']}, loss {pm(b['best_loss'], b['best_se'])}"
  if b["verdict"] == "best at the end":
    longest = b["last_epochs"] >= b.get("max_epochs", b["last_epochs"])
    if longest:
      return (f"{fam}'s lowest evaluation is the last of {run}, the largest epoch count tried "
              f"({where}): still improving there")
    return (f"{fam}'s lowest evaluation is the last of {run} ({where}), and longer runs (up to "
            f"E = {b['max_epochs']:g}) reached no lower")
  rise = pm(b["rise_after"], b["rise_after_se"])
  if b["verdict"] == "significant":
    return (f"{fam} is best at epoch {b['best_epoch']:.3g} of {run} ({where}), then rises by "
            f"{rise} by the run's end (significant: it overfits inside the run)")
  return (f"{fam} is best at epoch {b['best_epoch']:.3g} of {run} ({where}); its end is "
          f"{rise} higher (within 2 SE, inconclusive)")
