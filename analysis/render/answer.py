"""report.md sections for the study's answer: per budget the bests, their paired gap and
the crossover verdict; C_crit(U) beside the published law; R_D*, R_N*; the learning-rate sweep;
the task over training. Each sentence says only what its interval allows."""

from __future__ import annotations

from analysis.render.fmt import FAM, fam, law_context, num, pm, tok


def _first_upper(text: str) -> str:
  return text[:1].upper() + text[1:]


def gap_sentence(g: dict | None) -> str:
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
    return (f"diffusion's frontier crosses below AR's at C_crit = {b['c_crit']:.3g} FLOPs{within}"
            + _published_clause(b))
  if v == "no crossover":
    return (f"no crossover up to C = {b['bound']:.3g} FLOPs (AR significantly ahead there)"
            + _published_clause(b))
  if v == "mdm ahead throughout":
    return (f"diffusion is ahead over the whole shared range (C_crit < {b['c_range'][0]:.3g} FLOPs)"
            + _published_clause(b))
  if v == "inconclusive":
    return ("crossover inconclusive: at the largest shared compute the gap's interval contains 0"
            + (f" ({b['frac_crossing']:.0%} of resamples cross)" if "frac_crossing" in b else "")
            + _published_clause(b))
  return f"crossover: {v}"


def _published_clause(b: dict) -> str:
  """Where the published law (extrapolated) puts C_crit for this U, against the range run on its
  own axis (6ND, N with the embedding), with the law's E_crit and fitted range beside it."""
  where, pub, rng = b.get("published_in_range"), b.get("published_c_crit_6nd"), b.get("c_range_6nd")
  if where is None or pub is None or not rng:
    return ""
  says = {"inside": "inside the range measured, so this budget contradicts the extrapolation",
          "above": "beyond the range measured, so this budget cannot test it",
          "below": "below the range measured, where AR is ahead throughout: this budget "
                   "contradicts the extrapolation"}[where]
  other = b.get("other_convention") or {}
  alt = (f"; without the embedding the range is {other['c_range_6nd'][0]:.3g}–{other['c_range_6nd'][1]:.3g}"
         if other.get("c_range_6nd") else "")
  return (f"; the published law puts C_crit at {pub:.3g} FLOPs for this U in "
          f"{b.get('flops', '6ND')} (range measured {rng[0]:.3g}–{rng[1]:.3g} there{alt}): {says} "
          f"({law_context(b)})")


def curves_caption(findings: dict) -> str:
  """Figure 1's caption: what is drawn, the unigram floor (or why it is absent), and per budget the
  AR - MDM gap at the two families' bests with its 95% CI."""
  ans = findings.get("answer", {})
  floor = ans.get("unigram_floor") or {}
  if floor.get("value") is not None:
    fl = (f"Dotted: the unigram floor, {floor['value']:.3f} nats/token, the entropy of the "
          "validation tokens' unigram distribution (the best a predictor ignoring context scores "
          f"on them){'; ' + floor['note'] if floor.get('note') else ''}.")
  else:
    fl = f"No unigram floor is drawn: {floor.get('reason', 'not computed')}."
  gaps = []
  for b in ans.get("bests", []):
    fams = b["families"]
    where = "; ".join(f"{FAM.get(f, f)} {x['model_size']} at epoch {num(x['best_epoch'])}"
                      for f, x in sorted(fams.items()))
    gaps.append(f"U = {tok(b['unique_tokens'])} ({where}): {gap_sentence(b.get('gap'))}")
  return ("Validation loss (nats/token) at every evaluation of every run, one panel per unique "
          "budget U; shade: model size; ★: each family's best. " + fl
          + (" AR − MDM at the two bests: " + "; ".join(gaps) + "." if gaps else ""))


MAX_BUDGET_LINES = 4  # the answer is at most five lines: these and one across budgets


def _best_text(f: str, x: dict) -> str:
  if x.get("annealed"):
    still = (", an annealed branch end, the longest tried: still improving there" if x["still_improving"]
             else ", an annealed branch end; longer branches ended higher")
  else:
    still = ", still improving at its last evaluation" if x["still_improving"] else ""
  return (f"{FAM[f]} {pm(x['loss'], x['se'])} ({x['model_size']}, epoch {num(x['best_epoch'])} of "
          f"{x['epochs_planned']:g}, {num(x['best_flops'])} FLOPs{still})")


def _stars_text(stars: dict) -> str:
  """R_D* and R_N* per family that has them, and one clause for the families that do not."""
  parts, missing = [], []
  for f, s in sorted(stars.items()):
    if s["R_D_star"] is None:
      missing.append(fam(f))
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
    parts.append(f"{fam(f)} {rd}, {rn}")
  if missing:
    parts.append(f"R_D* and R_N* have no estimate for {', '.join(missing)} (the "
                 "data-constrained law, below, says why)")
  return ("; ".join(parts) + ".") if parts else ""


def _e_crit_text(fit: dict) -> str:
  per_u = fit.get("law_e_crit") or {}
  parts = [f"U = {float(u):.3g}: " + ", ".join(f"{v:.3g} at {k}" for k, v in e.items())
           for u, e in per_u.items() if e]
  return "; ".join(parts) or "not computed"


def _across(cross: dict) -> str:
  fit, ref = cross.get("c_crit_fit") or {}, cross.get("reference", {})
  if fit.get("status") == "ok":
    ci = fit.get("exponent_ci")
    a = f"a = {fit['exponent']:.2f}" + (f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else
                                        " (no interval)")
    pub = ", ".join(f"{c:.3g}" for c in fit["published_at_budgets"])
    return (f"Across budgets: C_crit(U) = {fit['coef_at_1e6']:.3g} × (U/1e6)^a FLOPs, {a}, in "
            f"{fit['flops']}; published {ref['coef_at_1e6']:.3g} × (U/1e6)^{ref['exponent']} "
            f"({ref['source']}), which at these budgets gives {pub} (an extrapolation: the law was "
            f"fitted on {fit.get('law_fitted_range', ref.get('fitted_range', 'U = 25M-100M'))}; "
            f"its E_crit = C_crit / (6 N U) at these budgets: {_e_crit_text(fit)}).")
  return (f"Across budgets: C_crit(U) not fitted ({fit.get('reason', 'no crossings')}); published "
          f"{ref.get('coef_at_1e6', 2.12e15):.3g} × (U/1e6)^{ref.get('exponent', 2.174)} in "
          f"{ref.get('flops', '6ND')}.")


def answer_section(bests: list[dict], cross: dict, stars: dict) -> list[str]:
  """At most five lines: per budget the bests, their paired gap and the crossover verdict; then
  C_crit(U) and R_D* across budgets."""
  by_u = {b["unique_tokens"]: b for b in cross.get("per_budget", [])}
  per = []
  for b in bests:
    parts = [_best_text(f, b["families"][f]) for f in ("ar", "mdm") if f in b["families"]]
    per.append(f"At U = {tok(b['unique_tokens'])}: " + "; ".join(parts) + ". "
               + _first_upper(gap_sentence(b.get("gap"))) + "; "
               + _cross_sentence(by_u.get(b["unique_tokens"])) + ".")
  if len(per) > MAX_BUDGET_LINES:
    per = per[:MAX_BUDGET_LINES - 1] + [" ".join(per[MAX_BUDGET_LINES - 1:])]
  head = ("## The answer (each family's best is the lowest of its noisy grid points, so biased "
          "low; the two bests are compared on the same validation sequences)")
  return [head, ""] + [f"- {p}" for p in per] + [
      "- " + " ".join(t for t in (_across(cross), _stars_text(stars)) if t), ""]


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
    wd = s.get("weight_decay")
    where = (f"{s['model_size']} (U = {tok(s['unique_tokens'])}, E = {s['epochs']:g}"
             + (f", weight decay {wd:g}" if wd is not None else "") + ")")
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
