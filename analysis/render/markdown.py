"""report.md: the findings as prose, one paragraph per finding, numbers with uncertainties."""

from __future__ import annotations

import re

from analysis.render import answer, epochs, laws, sweeps, tuning
from analysis.render.fmt import FAM, tok


def grid_section(grid: dict) -> list[str]:
  lines = ["## Grid", ""]
  lines.append(f"{grid['n_finished']} of {grid['n_runs']} run directories finished. Families: "
               f"{', '.join(FAM.get(f, f) for f in grid['families']) or 'none'}; budgets U: "
               f"{', '.join(tok(u) for u in grid['budgets'])}; sizes: {', '.join(grid['sizes'])};"
               f" epochs: {', '.join(f'{e:g}' for e in grid['epochs'])}.")
  for where, n in (grid.get("also") or {}).items():
    lines.append(f"Also analysed: {n} run(s) from {where} (not counted above; runs scored on the "
                 "tuning set enter only the learning-rate section).")
  if grid["partial"]:
    names = ", ".join(f"{p['run_name']} (step {p['last_step']:g})" if p["last_step"] is not None
                      else p["run_name"] for p in grid["partial"][:20])
    more = len(grid["partial"]) - 20
    lines.append(f"Not finished ({len(grid['partial'])}): {names}"
                 f"{f' and {more} more' if more > 0 else ''}. They are excluded from fits.")
  m = grid.get("manifest")
  if m:
    if "error" in m:
      lines.append(f"grid_manifest.json: {m['error']}.")
    else:
      lines.append(f"grid_manifest.json expects {m['expected']} runs: {m['n_finished']} finished, "
                   f"{m['n_partial']} partial, {m['n_missing']} missing.")
      missing = [r for r in m["rows"] if r["found"] != "finished"]
      if missing:
        lines += ["", "| run | manifest state | found |", "|---|---|---|"]
        lines += [f"| {r['run_name']} | {r['manifest_state']} | {r['found']} |" for r in missing]
      if m["not_in_manifest"]:
        lines.append(f"Found but not in the manifest: {', '.join(m['not_in_manifest'])}.")
  for p in grid["problems"][:10]:
    lines.append(f"- note: {p}")
  return lines + [""]


def evaluation_section(ev: dict | None) -> list[str]:
  """What every ± rests on: how many sequences and documents, and how errors were computed."""
  if not ev:
    return []
  docs = ev.get("eval_documents")
  seqs = ev.get("n_sequences")
  basis = (f"{', '.join(map(str, seqs))} sequences from {', '.join(map(str, docs))} validation documents"
           if docs and seqs else "an eval set whose documents the runs did not record")
  return ["## Validation set", "", f"Every loss is measured on {basis}; standard errors: "
          f"{ev['se']}. Per-sequence losses were found for {ev['points_with_per_sequence_losses']} "
          "grid point(s).", ""]


FIGURE_LINK = re.compile(r"^!\[[^\]]*\]\(figures/([\w-]+)\.png\)$")


def link_drawn_figures(lines: list[str], drawn: dict, not_drawn: dict[str, str]) -> list[str]:
  """Keeps a figure's link only when the figure was drawn; otherwise one line says why not."""
  out = []
  for line in lines:
    m = FIGURE_LINK.match(line)
    if m and m.group(1) not in drawn:
      line = f"*Figure {m.group(1)} not drawn: {not_drawn.get(m.group(1), 'no data for it')}.*"
    out.append(line)
  return out


FLOPS_CAPTION = ("Validation loss vs training compute, one panel per unique budget U: every "
                 "evaluation of each run (points) and each family's best-so-far frontier (lines); "
                 "dashed vertical: where diffusion's frontier crosses below AR's, if anywhere.")


def pictures(findings: dict) -> list[str]:
  """What the report leads with: the curves along every run, then loss vs compute."""
  return ["**Figure 1.** " + answer.curves_caption(findings), "",
          "![loss vs epochs](figures/loss_vs_epochs.png)", "",
          "**Figure 2.** " + FLOPS_CAPTION, "", "![loss vs FLOPs](figures/loss_vs_flops.png)", ""]


def render(findings: dict) -> str:
  """Pictures first, then at most five lines of answer, then every section in detail."""
  lines = ["# dlmscale report: masked diffusion vs autoregressive under data constraints", "",
           "Losses are validation nats/token (AR: exact NLL; MDM: ELBO bound). ± is one standard "
           "error (validation sampling and seed spread); CIs are bootstrap percentile intervals.",
           ""]
  lines += pictures(findings)
  if "answer" in findings:
    lines += answer.answer_section(findings["answer"]["bests"], findings["crossover"],
                                   findings["answer"]["stars"])
  lines += grid_section(findings["grid"])
  lines += evaluation_section(findings.get("evaluation"))
  lines += epochs.epochs_section(findings["epochs"], findings.get("within_run_overfitting", []))
  lines += laws.crossover_section(findings["crossover"])
  lines += laws.fits_section(findings["fits"])
  lines += sweeps.dd_section(findings["double_descent"])
  lines += sweeps.orders_section(findings.get("orders", []))
  if "task" in findings:
    lines += answer.task_section(findings["task"])
  lines += answer.lr_section(findings.get("lr_sweep", []))
  lines += tuning.weight_decay_section(findings.get("weight_decay", []))
  lines = link_drawn_figures(lines, findings.get("figures") or {}, findings.get("figures_not_drawn", {}))
  return "\n".join(lines)
