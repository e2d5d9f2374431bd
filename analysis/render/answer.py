"""report.md sections for the study's answer: per budget the bests, their paired gap and
the crossover verdict; C_crit(U) beside the published law; R_D*, R_N*; the learning-rate sweep;
the task over training. Each sentence says only what its interval allows."""

from __future__ import annotations

from analysis.render.fmt import FAM, fam, num, pm, tok


def _first_upper(text: str) -> str:
  return text[:1].upper() + text[1:]


def _gap_sentence(g: dict | None) -> str:
  if g is None:
    return "the gap needs both families"
  ci = g.get("ci")
  interval = f" (95% CI {ci[0]:.3f} to {ci[1]:.3f}; SE {g['se_kind']})" if ci else " (no interval)"
  word = {"positive": "diffusion's best is lower", "negative": "AR's best is lower"}.get(
      g["verdict"], "inconclusive: the interval contains 0")
  return f"AR − MDM = {g['ar_minus_mdm']:.3f}{interval}: {word}"


def _cross_sentence(b: dict | None) -> str:
  if b is None:
    return "no crossover analysis"
  v = b.get("verdict")
  if v == "crosses":
    ci = b.get("c_crit_ci")
    within = (f" (95% CI {ci[0]:.3g}–{ci[1]:.3g}, crossing in {b['frac_crossing']:.0%} of "
              "resamples)" if ci else " (no interval)")
    return f"diffusion's frontier crosses below AR's at C_crit = {b['c_crit']:.3g} FLOPs{within}"
  if v == "no crossover":
    return (f"no crossover up to C = {b['bound']:.3g} FLOPs (AR significantly ahead there)"
            + _published_clause(b))
  if v == "mdm ahead throughout":
    return f"diffusion is ahead over the whole shared range (C_crit < {b['c_range'][0]:.3g} FLOPs)"
  if v == "inconclusive":
    return ("crossover inconclusive: at the largest shared compute the gap's interval contains 0"
            + (f" ({b['frac_crossing']:.0%} of resamples cross)" if "frac_crossing" in b else ""))
  return f"crossover: {v}"


def _published_clause(b: dict) -> str:
  """Where the published law (extrapolated) puts C_crit for this U, against the 6ND range run."""
  where, pub, rng = b.get("published_in_range"), b.get("published_c_crit_6nd"), b.get("c_range_6nd")
  if where is None or pub is None or not rng:
    return ""
  says = {"inside": "inside the range measured, so this budget contradicts the extrapolation",
          "above": "beyond the range measured, so this budget cannot test it",
          "below": "below the range measured, where AR is ahead throughout: this budget "
                   "contradicts the extrapolation"}[where]
  return (f"; the published law puts C_crit at {pub:.3g} 6ND FLOPs for this U (range measured "
          f"{rng[0]:.3g}–{rng[1]:.3g} in 6ND): {says}")


def answer_section(bests: list[dict], cross: dict, stars: dict) -> list[str]:
  lines = ["## The answer, with its uncertainty", "",
           "Per budget: each family's lowest validation loss over its grid points (seed means of "
           "each run's best evaluation; the minimum of several noisy points is biased low), "
           "where it was reached, and the two compared on the same validation sequences.", ""]
  by_u = {b["unique_tokens"]: b for b in cross.get("per_budget", [])}
  for b in bests:
    parts = []
    for f in ("ar", "mdm"):
      x = b["families"].get(f)
      if x is None:
        continue
      still = ", still improving at its last evaluation" if x["still_improving"] else ""
      parts.append(f"{FAM[f]} {pm(x['loss'], x['se'])} ({x['model_size']}, epoch "
                   f"{num(x['best_epoch'])} of {x['epochs_planned']:g}, {num(x['best_flops'])} FLOPs"
                   f"{still})")
    lines.append(f"- At U = {tok(b['unique_tokens'])}, the best: " + "; ".join(parts) + ". "
                 + _first_upper(_gap_sentence(b.get("gap"))) + "; "
                 + _cross_sentence(by_u.get(b["unique_tokens"])) + ".")
  fit = cross.get("c_crit_fit") or {}
  ref = cross.get("reference", {})
  lines.append("")
  if fit.get("status") == "ok":
    ci = fit.get("exponent_ci")
    a = f"a = {fit['exponent']:.2f}" + (f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else
                                        " (no interval)")
    pub = ", ".join(f"{c:.3g}" for c in fit["published_at_budgets"])
    lines.append(f"Across budgets: C_crit(U) = {fit['coef_at_1e6']:.3g} × (U/1e6)^a FLOPs, {a}, "
                 f"in {fit['flops']}; published {ref['coef_at_1e6']:.3g} × (U/1e6)^"
                 f"{ref['exponent']} ({ref['source']}), which at these budgets gives {pub} "
                 "(an extrapolation of the published law far below its fitted range).")
  else:
    lines.append(f"Across budgets: C_crit(U) not fitted ({fit.get('reason', 'no crossings')}); "
                 f"published {ref.get('coef_at_1e6', 2.12e15):.3g} × (U/1e6)^"
                 f"{ref.get('exponent', 2.174)} in {ref.get('flops', '6ND')}.")
  lines.append("")
  for f, s in sorted(stars.items()):
    if s["R_D_star"] is None:
      lines.append(f"- {fam(f)}: R_D* and R_N* not identifiable ({s['reason']}).")
      continue
    ci = s.get("R_D_star_ci")
    rd = f"R_D* = {s['R_D_star']:.3g}" + (f" (95% CI {ci[0]:.3g}–{ci[1]:.3g})" if ci else
                                         " (no interval)")
    if s["R_N_star"] is None:
      rn = f"R_N* {s['R_N_star_reason']}"
    else:
      ci = s.get("R_N_star_ci")
      rn = f"R_N* = {s['R_N_star']:.3g}" + (f" (95% CI {ci[0]:.3g}–{ci[1]:.3g})" if ci else
                                           " (no interval)")
    lines.append(f"- {fam(f)}: {rd}; {rn}.")
  return lines + [""]


def lr_section(sweep: list[dict]) -> list[str]:
  lines = ["## Learning-rate sweep (tuning set)", ""]
  if not sweep:
    return lines + ["No learning-rate sweep runs (config eval.set = 'tune'); each family's rate "
                    "was not chosen by measurement here.", ""]
  lines += ["Losses on the tuning documents, held apart from the validation set every claim "
            "uses; the rate with the lowest tuning loss is chosen.", "",
            "| family | size | lr: tuning loss | chosen | vs runner-up | the study used |",
            "|---|---|---|---|---|---|"]
  for s in sweep:
    cells = ", ".join(f"{p['lr']:.3g}: {pm(p['loss'], p['se'])}" for p in s["points"])
    chosen = f"{s['chosen_lr']:.3g}" + (" (edge of the sweep: the optimum may lie beyond)"
                                        if s["at_edge"] else "")
    r = s.get("runner_up")
    vs = "—" if r is None else (
        f"{r['lr']:.3g} is {pm(r['loss_above'], r['se'])} higher"
        + ("" if r["verdict"] == "positive" else " (within errors: the two are not told apart)"))
    used = ", ".join(f"{v:.3g}" for v in s["used_by_claims"]) or "—"
    where = f"{s['model_size']} (U = {tok(s['unique_tokens'])}, E = {s['epochs']:g})"
    lines.append(f"| {fam(s['objective'])} | {where} | {cells} | {chosen} | {vs} | {used} |")
  return lines + ["", "![lr sweep](figures/lr_sweep.png)", ""]


def _with_se(value, se) -> str:
  """value ± se; a value whose run recorded no SE says so instead of standing bare."""
  text = pm(value, se)
  return text if value is None or "±" in text or text == "n/a" else f"{text} (no SE recorded)"


def task_section(task: dict) -> list[str]:
  lines = ["## Multiple-choice task over training (each family's best run)", ""]
  if not task["runs"]:
    lines.append("No best run recorded the built-in task.")
  for r in task["runs"]:
    last = r["points"][-1]
    head = (f"- {fam(r['objective'])} at U = {tok(r['unique_tokens'])} ({r['run_name']}, from "
            f"{r['source']}): accuracy {_with_se(last['accuracy'], last['accuracy_se'])}, NLL gap "
            f"(other choices − true) {_with_se(last['nll_gap'], last['nll_gap_se'])} at epoch "
            f"{num(last['epoch'])}")
    ch = r.get("accuracy_change_after_best")
    if ch:
      g = r["nll_gap_change_after_best"]
      word = {"positive": "rose", "negative": "fell"}
      head += (f"; from the first task point at or after its best validation epoch "
               f"({num(r['best_val_epoch'])}), epoch {num(ch['from_epoch'])}, to the end, accuracy "
               f"{word.get(ch['verdict'], 'did not change beyond errors')} "
               f"({pm(ch['value'], ch['se'])}) and the gap "
               f"{word.get(g['verdict'], 'did not change beyond errors')} ({pm(g['value'], g['se'])}), "
               f"SEs {ch['se_kind']}")
    lines.append(head + ".")
  if task.get("without_task"):
    lines.append(f"- Without a task record: {', '.join(task['without_task'])}.")
  if task.get("replica_not_the_same_run"):
    lines.append("- A re-run with the task exists but ended at another validation loss, so it is not "
                 f"used: {', '.join(task['replica_not_the_same_run'])}.")
  if task.get("trainer_must_record"):
    lines += ["", f"Not a curve over training: {task['trainer_must_record']}."]
  return lines + [""]
