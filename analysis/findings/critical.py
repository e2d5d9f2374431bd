"""Does diffusion's loss-vs-compute frontier cross AR's, where, and how sure is that, per budget U;
and C_crit(U) = k U^a across budgets.

Per U the frontiers and the crossing come from crossover.py, over every evaluation along each run
where the curves are known (an overfitting run's best lies mid-way, and stopping there is a way to
spend that compute), else over final losses. Two uncertainties:
  - whether MDM is ahead at the largest compute both families reached: AR - MDM there, paired per
    sequence (clustered by document) when both runs saved per-sequence losses. This decides the
    verdict: "crosses" (MDM significantly ahead, C_crit the start of its final lead), "no
    crossover" (AR significantly ahead: C_crit, if any, lies beyond the largest shared compute,
    which is the bound reported), or "inconclusive" (the interval contains 0);
  - where the crossing lies: a bootstrap over the validation DOCUMENTS (every point's loss
    recomputed from its per-sequence losses under the same resampled documents, so the
    comparison stays paired); points without saved losses are drawn from N(loss, se) instead.
    The C_crit interval is over the resamples that cross, with the share that do.
The published C_crit(U) = 2.12e15 (U/1e6)^2.174 counts FLOPs as 6 N D with N counting the
embedding: the released scripts' MODEL_PARAM_CNT adds V x d_model to the blocks (Prabhudesai et al.;
reference/README.md). The comparison with it is made on that axis (C_6ND_total); the non-embedding
axis (C_6ND, Kaplan's convention) is reported beside it. Beside every comparison stands what the law
itself implies at this U: E_crit = C_crit(U) / (6 N U), the epochs at which it puts the crossing for
each model size N run (N with the embedding), and the range the law was fitted on (FITTED_RANGE).
The per-budget C_crit here is in the runs' counted FLOPs (flops.py: causal attention at half); the
law across budgets is fitted on the crossings recomputed on the 6ND axes so it compares with the
published one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.findings import paired
from analysis.findings.points import curve_key, point_key
from analysis.laws import crossover

PAPER_FLOPS = "6ND, N with the embedding (the paper's convention)"
OTHER_FLOPS = "6ND, N without the embedding"
FITTED_RANGE = dict(unique_tokens=(25e6, 100e6), params=(7e6, 2.5e9), max_epochs=800,
                    text="U = 25M-100M unique tokens, models of 7M-2.5B parameters (with the "
                         "embedding), up to 800 epochs")
REFERENCE = dict(coef_at_1e6=2.12e15, exponent=2.174, flops=PAPER_FLOPS, fitted_range=FITTED_RANGE["text"],
                 source="Prabhudesai et al. 2025 (arXiv:2507.15857), fitted over U = 25M..100M")
FAMILIES = ("ar", "mdm")
FINAL = "each run's final loss at its total compute"
ALONG = ("every evaluation along each run at the compute spent by then (stopping there is a way to "
         "spend that compute); these are read mid-schedule (a cosine run's, or a WSD trunk's at its "
         "constant rate) and not annealed at that length, except WSD branch ends, which are; that "
         "favours neither family by construction but makes each frontier an upper bound on the "
         "loss a run of that length would reach")
LEVEL = 0.95


def _frontier_point(g: pd.DataFrame, fr: crossover.Frontier, log_c: float):
  """The grid point whose loss is the frontier's value at log_c (None where it is interpolated)."""
  value = float(fr.at(log_c))
  hit = g[np.isclose(g["loss"].to_numpy(dtype=np.float64), value, rtol=1e-12, atol=0.0)
          & (np.log(g["C"].to_numpy(dtype=np.float64)) <= log_c + 1e-9)]
  return None if hit.empty else hit.iloc[0]


def _frontier_record(g: pd.DataFrame, fr: crossover.Frontier, log_c: float, records: dict,
                     key) -> dict | None:
  """Per-sequence losses whose mean is the frontier's value at log_c: a point's own, or, between
  two knots, the same linear interpolation of theirs (so the gap there can still be paired)."""
  hit = _frontier_point(g, fr, log_c)
  if hit is not None:
    return records.get(key(hit))
  j = int(np.searchsorted(fr.log_c, log_c)) - 1
  if j < 0 or j + 1 >= fr.log_c.size:
    return None
  ends = [_frontier_point(g, fr, float(fr.log_c[i])) for i in (j, j + 1)]
  recs = [None if e is None else records.get(key(e)) for e in ends]
  if any(r is None for r in recs) or not np.array_equal(recs[0]["chunk_N"], recs[1]["chunk_N"]):
    return None
  w = (log_c - fr.log_c[j]) / (fr.log_c[j + 1] - fr.log_c[j])
  return dict(recs[0], loss_N=(1 - w) * np.asarray(recs[0]["loss_N"], np.float64)
              + w * np.asarray(recs[1]["loss_N"], np.float64))


def _paired_gap(fams: dict, fr: dict, c_top: float, records: dict, key=point_key) -> dict | None:
  """AR - MDM at the largest shared compute, paired per sequence, when both values are runs or
  interpolations between runs that saved per-sequence losses."""
  a, m = (_frontier_record(fams[k], fr[k], float(np.log(c_top)), records, key) for k in FAMILIES)
  return paired.difference(a, m)


def verdict(status: str, gap_verdict: str | None) -> str:
  """The claim a budget supports: the frontiers' shape must agree with the gap's interval."""
  if status == "crosses" and gap_verdict == "positive":
    return "crosses"
  if status == "mdm_never_below" and gap_verdict == "negative":
    return "no crossover"
  if status == "mdm_below_throughout" and gap_verdict == "positive":
    return "mdm ahead throughout"
  if status in ("needs both families", "no_overlap"):
    return status
  return "inconclusive"


def resampled_losses(pts: pd.DataFrame, records: dict[tuple, dict], n_boot: int,
                     seed: int, key=point_key) -> tuple[np.ndarray, str]:
  """[n_boot, points] losses under resampled validation documents (see module docstring)."""
  rng = np.random.default_rng(seed)
  rows = [r for _, r in pts.iterrows()]
  recs = [records.get(key(r)) for r in rows]
  ref = next((r for r in recs if r is not None), None)
  out = np.empty((n_boot, len(rows)))
  n_doc = 0
  if ref is not None:
    docs, doc_index_N = np.unique(ref["document_N"], return_inverse=True)
    n_doc = docs.size
    counts_RxD = np.stack([np.bincount(rng.integers(0, n_doc, n_doc), minlength=n_doc)
                           for _ in range(n_boot)]).astype(np.float64)
    w_RxN = counts_RxD[:, doc_index_N]
    w_RxN /= w_RxN.sum(axis=1, keepdims=True)
  n_paired = 0
  for j, (r, rec) in enumerate(zip(rows, recs)):
    if rec is not None and ref is not None and np.array_equal(rec["chunk_N"], ref["chunk_N"]):
      out[:, j] = w_RxN @ np.asarray(rec["loss_N"], np.float64)
      n_paired += 1
    else:
      out[:, j] = r["loss"] + rng.normal(0.0, np.nan_to_num(r["se"]), n_boot)
  kind = (f"{n_boot} resamples of the {n_doc} validation documents (paired across runs; "
          "validation sampling only, the seed-to-seed spread is not resampled)"
          if n_paired == len(rows) else
          f"{n_boot} resamples: documents for {n_paired} of {len(rows)} points, N(loss, SE) for the "
          "rest (no per-sequence losses saved)")
  return out, kind


def _crossing(g: pd.DataFrame, loss: np.ndarray, c_col: str) -> crossover.Crossing:
  fr = {}
  for k in FAMILIES:
    sel = (g["objective"] == k).to_numpy()
    fr[k] = crossover.frontier(g.loc[sel, c_col], loss[sel])
  return crossover.critical_compute(fr["ar"], fr["mdm"])


def published_c_crit(u: float | np.ndarray) -> float | np.ndarray:
  """The published law's C_crit at U unique tokens (a number or an array; 6ND FLOPs), extrapolated
  where U is outside the 25M-100M it was fitted on."""
  return REFERENCE["coef_at_1e6"] * (u / 1e6) ** REFERENCE["exponent"]


def law_e_crit(u: float, n_total: float) -> float:
  """The epochs at which the published law puts the crossing for a model of n_total parameters
  (embedding included, as the law counts them) at U unique tokens: C_crit(U) / (6 N U)."""
  return float(published_c_crit(u)) / (6.0 * n_total * u)


def with_total_axis(pts: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
  """pts with N_total and C_6ND_total = C_6ND x N_total / N: the points' own N_total, else each point's
  first run's params_total from `runs`; without either, the non-embedding axis stands in."""
  out = pts.copy()
  if "N_total" not in out.columns or out["N_total"].isna().all():
    by_run = ({} if runs is None or "params_total" not in runs.columns
              else dict(zip(runs["run_name"], pd.to_numeric(runs["params_total"], errors="coerce"))))
    first = out["runs"].astype(str).str.split(",").str[0] if "runs" in out.columns else None
    out["N_total"] = [by_run.get(r, np.nan) for r in first] if first is not None else np.nan
  n = pd.to_numeric(out["N"], errors="coerce") if "N" in out.columns else pd.Series(np.nan, index=out.index)
  n_total = pd.to_numeric(out["N_total"], errors="coerce")
  ratio = (n_total / n).where(np.isfinite(n_total / n), 1.0) if len(out) else n_total
  out["N_total"] = n_total.fillna(n)
  out["C_6ND_total"] = out["C_6ND"] * ratio
  return out


def _beside_published(u: float, c6: crossover.Crossing, g: pd.DataFrame) -> dict:
  """The shared compute range on the published law's axis (6ND, N with the embedding), where the
  law's C_crit for this U falls against it (a budget whose range holds it tests it), and the law's
  own E_crit at this U for each model size run."""
  pub = published_c_crit(u)
  sizes = g.groupby("model_size")["N_total"].median() if "model_size" in g.columns else pd.Series(dtype=float)
  e_crit = {str(k): law_e_crit(u, float(n)) for k, n in sizes.sort_values().items() if np.isfinite(n)}
  base = dict(published_c_crit_6nd=pub, flops=PAPER_FLOPS, law_e_crit=e_crit,
              law_fitted_range=FITTED_RANGE["text"])
  if c6.c_range is None:
    return dict(base, c_range_6nd=None, published_in_range=None)
  lo, hi = c6.c_range
  where = "below" if pub < lo else ("inside" if pub <= hi else "above")
  return dict(base, c_range_6nd=list(c6.c_range), published_in_range=where)


def _interval(samples: np.ndarray) -> list[float] | None:
  s = samples[np.isfinite(samples)]
  if s.size < 2:
    return None
  q = (50 * (1 - LEVEL), 50 * (1 + LEVEL))
  return [float(np.percentile(s, q[0])), float(np.percentile(s, q[1]))]


def findings(pts: pd.DataFrame, records: dict[tuple, dict] | None = None, *, n_boot: int = 200,
             seed: int = 0, runs: pd.DataFrame | None = None) -> dict:
  """pts: points.points (final losses, records keyed by point_key) or points.curve_points (every
  evaluation along each run, records keyed by curve_key: told apart by its `step` column).
  runs: the runs table, for each point's params_total where pts lacks N_total (curve points)."""
  records = records or {}
  pts = with_total_axis(pts.reset_index(drop=True), runs)
  along = "step" in pts.columns
  key = curve_key if along else point_key
  boot, boot_kind = (resampled_losses(pts, records, n_boot, seed, key) if n_boot > 0 and len(pts)
                     else (None, "no resamples (--n_boot=0)"))
  per_budget, six = [], {}
  for u, g in pts.groupby("unique_tokens"):
    fams = {obj: gg for obj, gg in g.groupby("objective")}
    if not set(FAMILIES) <= set(fams):
      per_budget.append(dict(unique_tokens=float(u), status="needs both families",
                             verdict="needs both families", families=sorted(fams)))
      continue
    fr = {k: crossover.frontier(fams[k]["C"], fams[k]["loss"], fams[k]["se"]) for k in FAMILIES}
    cross = crossover.critical_compute(fr["ar"], fr["mdm"]).named()
    cross["gap_se_kind"] = paired.INDEPENDENT
    pg = _paired_gap(fams, fr, cross["c_range"][1], records, key) if cross["c_range"] else None
    if pg is not None and np.isfinite(pg["se"]):
      cross.update(gap_se_at_max=pg["se"], gap_se_kind=paired.PAIRED)
    cross["gap_verdict"] = (paired.verdict(cross["gap_at_max"], cross["gap_se_at_max"])
                            if cross["gap_at_max"] is not None else None)
    cross["verdict"] = verdict(cross["status"], cross["gap_verdict"])
    if cross["verdict"] == "no crossover":
      cross["bound"] = cross["c_range"][1]  # C_crit > this, if it exists
    loss = g["loss"].to_numpy(dtype=np.float64)
    c6, c6_other = _crossing(g, loss, "C_6ND_total"), _crossing(g, loss, "C_6ND")
    entry = dict(unique_tokens=float(u), **cross, c_crit_6nd=c6.c_crit, **_beside_published(u, c6, g),
                 other_convention=dict(flops=OTHER_FLOPS, c_crit_6nd=c6_other.c_crit,
                                       c_range_6nd=None if c6_other.c_range is None else list(c6_other.c_range)),
                 frontier={k: dict(C=np.exp(f.log_c).tolist(), loss=f.loss.tolist())
                           for k, f in fr.items()})
    if boot is not None:
      cols = g.index.to_numpy()
      rep = [(_crossing(g, boot[i, cols], "C"), _crossing(g, boot[i, cols], "C_6ND_total"))
             for i in range(boot.shape[0])]
      c_rep = np.array([c.c_crit if c.status == "crosses" else np.nan for c, _ in rep])
      six[float(u)] = np.array([c.c_crit if c.status == "crosses" else np.nan for _, c in rep])
      entry.update(frac_crossing=float(np.mean(np.isfinite(c_rep))), c_crit_ci=_interval(c_rep))
    per_budget.append(entry)
  return dict(per_budget=per_budget, uncertainty=boot_kind, points=ALONG if along else FINAL,
              c_crit_fit=c_crit_law(per_budget, six), reference=REFERENCE,
              c_crit_6nd={str(b["unique_tokens"]): b["c_crit_6nd"] for b in per_budget
                          if b.get("verdict") == "crosses" and b.get("c_crit_6nd")})


def c_crit_law(per_budget: list[dict], six_rep: dict[float, np.ndarray]) -> dict:
  """log C_crit = log k + a log U over the budgets that cross beyond errors (6ND FLOPs), with the
  percentile interval of a over the resamples in which every one of them crosses."""
  crossing = [b for b in per_budget if b.get("verdict") == "crosses" and b.get("c_crit_6nd")]
  if len(crossing) < 2:
    named = ", ".join(f"U = {b['unique_tokens']:g}" for b in crossing) or "none"
    return dict(status="not fitted",
                reason=f"crossings beyond errors at {len(crossing)} budget(s) ({named}); a power "
                       "law across budgets needs >= 2")
  u = np.array([b["unique_tokens"] for b in crossing])
  law = crossover.fit_c_crit(u, [b["c_crit_6nd"] for b in crossing])
  out = dict(status="ok", **law.named(), coef_at_1e6=float(law(1e6)), flops=REFERENCE["flops"],
             budgets=u.tolist(), published_at_budgets=published_c_crit(u).tolist(),
             law_e_crit={str(b["unique_tokens"]): b.get("law_e_crit", {}) for b in crossing},
             law_fitted_range=FITTED_RANGE["text"])
  if six_rep and all(float(x) in six_rep for x in u):
    c_RxB = np.stack([six_rep[float(x)] for x in u], axis=1)
    ok = np.all(np.isfinite(c_RxB), axis=1)
    lu = np.log(u)
    slopes = np.array([np.polyfit(lu, np.log(c), 1)[0] for c in c_RxB[ok]])
    out.update(exponent_ci=_interval(slopes), frac_all_crossing=float(np.mean(ok)))
  return out
