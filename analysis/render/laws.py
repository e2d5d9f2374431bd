"""report.md's law sections: the crossover of the two frontiers and the fitted laws, each number with
its interval (or the reason it has none)."""

from __future__ import annotations

from analysis.render.fmt import FAM, pm, published_line, tok


def _c_ci(b: dict) -> str:
  """The C_crit interval over document resamples, or why there is none."""
  ci = b.get("c_crit_ci")
  if ci is None:
    return "; no interval (no resamples)" if "frac_crossing" not in b else (
        f"; no interval (the frontiers cross in {b['frac_crossing']:.0%} of resamples)")
  return (f"; 95% CI {ci[0]:.3g}–{ci[1]:.3g} over the resamples that cross "
          f"({b['frac_crossing']:.0%} of them)")


def crossover_section(cross: dict) -> list[str]:
  lines = ["## Does diffusion overtake AR at equal compute?", ""]
  for b in sorted(cross["per_budget"], key=lambda b: b["unique_tokens"]):
    u = tok(b["unique_tokens"])
    st = b["status"]
    gap = pm(b.get("gap_at_max"), b.get("gap_se_at_max"))
    inconclusive = b.get("gap_verdict") in ("inconclusive", "no interval")
    how = f"; SE {b['gap_se_kind']}" if b.get("gap_se_kind") else ""
    if st == "crosses" and inconclusive:
      lines.append(f"- U = {u}: inconclusive: MDM's best loss dips below AR's at {b['c_crit']:.3g} "
                   f"FLOPs, but at the largest shared compute ({b['c_range'][1]:.3g}) AR − MDM = "
                   f"{gap}, whose 95% interval contains 0{how}.")
    elif st == "crosses" and b.get("verdict", "crosses") == "crosses":
      lines.append(f"- U = {u}: MDM's best loss falls below AR's at C_crit = {b['c_crit']:.3g} "
                   f"FLOPs (loss {b['loss_at_crossing']:.3f}){_c_ci(b)}; at the largest shared "
                   f"compute ({b['c_range'][1]:.3g}) AR − MDM = {gap}{how}.")
    elif st == "crosses":
      lines.append(f"- U = {u}: inconclusive: MDM's frontier dips below AR's at {b['c_crit']:.3g} "
                   f"FLOPs, but at the largest shared compute AR − MDM = {gap} is negative{how}.")
    elif st == "mdm_never_below":
      verdict = (" (inconclusive: the interval contains 0)" if inconclusive else
                 f": no crossover up to C = {b['c_range'][1]:.3g} FLOPs")
      lines.append(f"- U = {u}: MDM stays above AR over the shared compute range "
                   f"{b['c_range'][0]:.3g}–{b['c_range'][1]:.3g} FLOPs (gap at the top "
                   f"{gap}{how}){verdict}; C_crit, if any, lies beyond.")
    elif st == "mdm_below_throughout":
      sure = "" if b.get("gap_verdict") == "positive" else " (inconclusive: the gap's interval contains 0)"
      lines.append(f"- U = {u}: MDM is below AR over the whole shared range; C_crit < "
                   f"{b['c_range'][0]:.3g} FLOPs{sure}.")
    elif st == "no_overlap":
      lines.append(f"- U = {u}: the two families' compute ranges do not overlap.")
    else:
      lines.append(f"- U = {u}: {st} (have: {', '.join(b.get('families', []))}).")
    if line := published_line(b):
      lines.append(line)
  if cross.get("points"):
    lines += ["", f"Each family's frontier is the lowest loss reached so far over {cross['points']}."]
  if cross.get("uncertainty"):
    lines += ["", f"Where the crossing lies: {cross['uncertainty']}."]
  fit = cross.get("c_crit_fit") or {}
  ref = cross["reference"]
  lines.append("")
  if fit.get("status") == "ok":
    ci = fit.get("exponent_ci")
    a_txt = (f"{fit['exponent']:.2f} (95% CI {ci[0]:.2f}–{ci[1]:.2f} over the "
             f"{fit['frac_all_crossing']:.0%} of resamples where every budget crosses)" if ci
             else f"{fit['exponent']:.2f} (no interval: too few resamples cross at every budget)")
    lines.append(f"Across the {fit['n_points']} budgets that cross beyond errors, C_crit(U) = "
                 f"{fit['coef_at_1e6']:.3g} × (U/1e6)^{fit['exponent']:.2f} FLOPs in "
                 f"{fit['flops']}, the convention of the published law (Prabhudesai et al.: "
                 f"{ref['coef_at_1e6']:.3g} × (U/1e6)^{ref['exponent']}, {ref['source']}; fitted on "
                 f"{ref.get('fitted_range', 'U = 25M-100M')}); "
                 f"exponent a = {a_txt}. The per-budget C_crit above are in counted FLOPs "
                 "(causal attention at half).")
  else:
    lines.append(f"C_crit(U) is not fitted: {fit.get('reason', 'no crossings')}. (Published, "
                 f"{ref.get('flops', '6ND')}: {ref['coef_at_1e6']:.3g} × (U/1e6)^{ref['exponent']}, "
                 f"fitted on {ref.get('fitted_range', 'U = 25M-100M')}.)")
  return lines + ["", "![C_crit](figures/c_crit.png)", ""]


def _ci(boot: dict | None, key: str) -> str:
  if not boot or key not in boot.get("ci", {}):
    return ""
  lo, hi = boot["ci"][key]
  return f" (95% CI {lo:.3g}–{hi:.3g})"


def _cross_checks(c: dict) -> str:
  """Approaches 1 and 2 exponents, where the grid allowed them."""
  out = []
  for key, name in (("approach1", "approach 1 (curve envelope)"),
                    ("approach2", "approach 2 (isoFLOP minima)")):
    a = c.get(key) or {}
    if "N_opt" in a:
      out.append(f"{name}: C^{pm(a['N_opt']['exponent'], a['N_opt']['exponent_se'], 3)}")
  return f" ({'; '.join(out)})" if out else ""


# The grid that identifies each law where this one cannot: the one line a report gives a law it
# cannot fit (never a paragraph per family).
NEEDS = {
    "chinchilla": "Chinchilla fits need >= 3 sizes x >= 3 budgets of single-epoch runs: "
                  "`configs/isoflop.py`",
    "datacons": "the data-constrained law needs >= 3 sizes x >= 2 budgets x several epoch counts: "
                "`configs/datacons.py`",
    "kaplan": "Kaplan's laws need >= 3 sizes and >= 3 dataset sizes, each read at its best: "
              "`configs/datacons.py`",
}




def failed_line(law: str, failed: dict[str, dict], need: str) -> str | None:
  """One line for every family a law could not be fitted for, naming the grid that fits it."""
  if not failed:
    return None
  status = next(iter(failed.values())).get("status", "not fitted")
  return (f"- {law}: {status} for {', '.join(FAM.get(f, f) for f in sorted(failed))} "
          f"({reasons(failed)}). {need[:1].upper() + need[1:]}.")


def reasons(failed: dict[str, dict]) -> str:
  """Each distinct reason of the families', with the families that gave it."""
  by: dict[str, list[str]] = {}
  for f, c in sorted(failed.items()):
    by.setdefault(c.get("reason") or "no reason recorded", []).append(FAM.get(f, f))
  return "; ".join(f"{', '.join(fs)}: {why}" for why, fs in by.items())


def _chinchilla_line(name: str, c: dict) -> str:
  p, se = c["params"], (c.get("bootstrap") or {}).get("se", {})
  return (f"- {name}, Chinchilla approach 3 on {c['n_points']} single-epoch points: "
          f"E = {pm(p['E'], se.get('E'))}, alpha = {pm(p['alpha'], se.get('alpha'))}, "
          f"beta = {pm(p['beta'], se.get('beta'))}; compute-optimal N ∝ C^"
          f"{pm(c['allocation_exponent'], se.get('allocation_exponent'))}{_cross_checks(c)}.")


def _datacons_lines(name: str, d: dict) -> list[str]:
  p, b = d["params"], d.get("bootstrap")
  upper = (b or {}).get("frac_at_upper_bound", {}).get("rd", 0.0)
  rd_txt = f"R_D* = {p['R_D_star']:.3g}{_ci(b, 'R_D_star')}"
  if "rd" in d["at_bound"] or upper > 0.025:
    rd_txt += (" — at or near the search limit (1e5) in "
               f"{upper:.0%} of resamples: repetition never hurt measurably here, so only a "
               "lower bound is meaningful")
  if not d["R_N_star_identifiable"]:
    rn_txt = "R_N* " + d.get("R_N_star_note", "not identifiable (no run has excess parameters)")
  else:
    rn_txt = f"R_N* = {p['R_N_star']:.3g}{_ci(b, 'R_N_star')}"
  lines = [f"- {name}, data-constrained law ({d['mode']}, {d['n_points']} points, "
           f"R² = {d['r2']:.3f}): {rd_txt}; {rn_txt}."]
  if d["other_minima"]:
    alt = "; ".join(f"R_D* = {m['R_D_star']:.3g} (objective {m['objective']:.4g})"
                    for m in d["other_minima"][:3])
    lines.append(f"  Other local minima (objective {d['objective']:.4g} at the best): {alt}.")
  return lines


def fits_section(fits: dict) -> list[str]:
  """Per law: a line per family it was fitted for, and one line for all the families it was not."""
  lines = ["## Scaling laws per family", ""]
  for key, law in (("chinchilla", "Chinchilla approach 3"), ("datacons", "data-constrained law")):
    per = fits[key]
    for fam, c in sorted(per.items()):
      if c["status"] == "ok":
        name = FAM.get(fam, fam)
        lines += [_chinchilla_line(name, c)] if key == "chinchilla" else _datacons_lines(name, c)
    line = failed_line(law, {f: c for f, c in per.items() if c["status"] != "ok"}, NEEDS[key])
    lines += ([line] if line else []) + [""]
  lines += kaplan_lines(fits.get("kaplan", {}))
  target = fits.get("datacons_target")
  if target:
    lines += ["", f"The data-constrained law is fitted on {target['description']} "
                  f"(`--datacons_target={target['name']}`)."]
  ratio = ratio_sentence(fits.get("R_D_star_ratio_mdm_over_ar"))
  lines += ["", ratio] if ratio else []
  return lines + ["", "![law contours](figures/law_contours.png)", "",
                  "![residuals](figures/residuals.png)", ""]


KAPLAN_SHOWN = {"N": ("a_N", "N_c"), "D": ("a_D", "D_c"), "C": ("a_C", "C_c"),
                "joint": ("a_N", "a_D", "N_c", "D_c")}
KAPLAN_NAMES = {"N": "L(N)", "D": "L(D)", "C": "L(C_min)", "joint": "L(N, D)"}


def _kaplan_param(k: dict, name: str) -> str:
  """A value with its CI, or why it is not a finding (on a search bound in the fit or in more
  than 2.5% of resamples)."""
  boot = k.get("bootstrap") or {}
  on_edge = name in k["unidentified"] or f"log_{name}" in k["unidentified"]
  frac = max(boot.get("frac_at_bound", {}).get(n, 0.0) for n in (name, f"log_{name}"))
  if on_edge:
    why = (k.get("unidentified_why") or {}).get(name, "on a search bound or its term negligible")
    return f"{name} not identified ({why})"
  ci = boot.get("ci", {}).get(name)
  ci_txt = _ci(boot, name) if ci is None or None not in ci else " (95% CI unbounded)"
  txt = f"{name} = {k['params'][name]:.3g}{ci_txt}"
  return txt + (f" (on a bound in {frac:.0%} of resamples)" if frac > 0.025 else "")


def kaplan_lines(kap: dict) -> list[str]:
  """One line per Kaplan form: each family fitted, then those not, together."""
  lines, none = [], {}
  fams = sorted(kap)
  for form in ("N", "D", "C", "joint"):
    per = {f: kap[f].get(form, {}) for f in fams}
    ok = [f"{FAM.get(f, f)} on {k['n_points']} points: "
          + ", ".join(_kaplan_param(k, nm) for nm in KAPLAN_SHOWN[form])
          for f, k in per.items() if k.get("status") == "ok"]
    failed = {f: dict(k, status=k.get("status", "not fitted")) for f, k in per.items()
              if k.get("status") != "ok"}
    law = f"Kaplan {KAPLAN_NAMES[form]}"
    if ok:
      lines.append(f"- {law}: " + "; ".join(ok) + ".")
      line = failed_line(law, failed, NEEDS["kaplan"])
      lines += [line] if line else []
    elif failed:
      none[KAPLAN_NAMES[form]] = failed
  if none:  # the forms no family could be fitted for: one line for them all
    status = next(iter(next(iter(none.values())).values())).get("status", "not fitted")
    fams_txt = ", ".join(sorted({FAM.get(f, f) for v in none.values() for f in v}))
    why = "; ".join(f"{form}: {reasons(v)}" for form, v in none.items())
    lines.append(f"- Kaplan {', '.join(none)}: {status} for {fams_txt} ({why}). "
                 f"{NEEDS['kaplan'][:1].upper() + NEEDS['kaplan'][1:]}.")
  if lines:
    lines += ["  (D = dataset size, early-stopped loss; C in FLOPs.) Kaplan et al. 2020 (WebText2): "
              "a_N = 0.076, a_D = 0.095, a_C = 0.050; joint a_N = 0.076, a_D = 0.103."]
  return ([""] + lines) if lines else []


def ratio_sentence(ratio: dict | None) -> str | None:
  """The R_D* ratio, worded by its interval: a direction only when the interval excludes 1; None
  when a family's law was not identified (its line already says so)."""
  if not ratio or "value" not in ratio:
    why = (ratio or {}).get("reason", "R_D* needs a fit for both families")
    if "not identifi" in why:
      return None
    return f"R_D*(MDM) / R_D*(AR): not reported: {why}."
  if "ci" not in ratio:
    return (f"R_D*(MDM) / R_D*(AR) = {ratio['value']:.3g} without an interval (no bootstrap): "
            "no conclusion is drawn from it.")
  lo, hi = ratio["ci"]
  head = f"R_D*(MDM) / R_D*(AR) = {ratio['value']:.3g} (95% CI {lo:.3g}–{hi:.3g})"
  if ratio.get("verdict") == "above 1":
    tail = "diffusion keeps extracting value from repeated data for longer than AR"
  elif ratio.get("verdict") == "below 1":
    tail = "diffusion extracts value from repeated data for less long than AR"
  else:
    tail = "inconclusive: the interval contains 1"
  return (f"{head}: {tail} (published, Prabhudesai et al. arXiv:2507.15857 as transcribed in "
          "analysis/reference/README.md, version not recorded: 512.85 / 31.93 = 16.1).")
