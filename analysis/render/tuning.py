"""report.md's weight-decay check (tuning set): the study's decay against another, paired."""

from __future__ import annotations

from analysis.render.fmt import fam, pm, tok


NEGLIGIBLE = 0.01  # nats: a difference this small changes no comparison the study makes, however tight its SE


def weight_decay_section(checks: list[dict]) -> list[str]:
  """Nothing when the grid has no such check; else one row per (family, point, other decay)."""
  if not checks:
    return []
  lines = ["## Weight-decay check (tuning set)", "",
           "Tuning-set loss with another weight decay than the study's, at the same learning rate; "
           "the difference is paired over the tuning sequences (> 0: the study's decay is better); one "
           f"under {NEGLIGIBLE:g} nats reads as negligible, however tight its interval.", "",
           "| family | point | study's decay: loss | other decay | other − study's | reading |",
           "|---|---|---|---|---|---|"]
  words = {"positive": "the study's decay is better", "negative": "the other decay is better",
           "inconclusive": "within errors: not told apart", "no interval": "no interval"}
  for c in checks:
    where = f"{c['model_size']}, U = {tok(c['unique_tokens'])}, E = {c['epochs']:g}, lr {c['lr']:.3g}"
    reading = (f"negligible (under {NEGLIGIBLE:g} nats)" if abs(c["other_minus_base"]) < NEGLIGIBLE
               else words[c["verdict"]])
    lines.append(f"| {fam(c['objective'])} | {where} | {c['base']:g}: {c['base_loss']:.3f} | {c['other']:g} | "
                 f"{pm(c['other_minus_base'], c['se'], digits=4)} | {reading} |")
  return lines + [""]
