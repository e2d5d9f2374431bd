"""What the study rests on: the runs found and finished, and how its evaluations were scored."""

from __future__ import annotations

import numpy as np
import pandas as pd


def evaluation_summary(runs: pd.DataFrame, records: dict[tuple, dict]) -> dict:
  """What the validation numbers rest on: sequences, documents, and how errors were computed."""
  done = runs[runs["finished"] & np.isfinite(runs["final_eval_loss"])]
  docs = pd.to_numeric(done.get("eval_documents"), errors="coerce") if "eval_documents" in done else None
  seqs = pd.to_numeric(done.get("n_sequences"), errors="coerce") if "n_sequences" in done else None
  known = None if docs is None or docs.isna().all() else sorted({int(v) for v in docs.dropna()})
  return dict(eval_documents=known,
              n_sequences=None if seqs is None or seqs.isna().all() else sorted({int(v) for v in seqs.dropna()}),
              points_with_per_sequence_losses=len(records),
              se=("clustered by document; comparisons paired per sequence" if known else
                  "as recorded by the runs (from before the eval set was spread over documents: "
                  "sequences treated as independent, which understates the error)"))


def grid_summary(runs: pd.DataFrame, manifest: dict | None, problems: list[str]) -> dict:
  done = runs["finished"] & np.isfinite(runs["final_eval_loss"])
  partial = runs.loc[~done, ["run_name", "last_step", "steps"]]
  return dict(n_runs=int(len(runs)), n_finished=int(done.sum()),
              partial=[dict(run_name=r.run_name,
                            last_step=None if not np.isfinite(r.last_step) else float(r.last_step))
                       for r in partial.itertuples()],
              families=sorted(map(str, runs.loc[done, "objective"].dropna().unique())),
              budgets=sorted(float(u) for u in runs.loc[done, "unique_tokens"].dropna().unique()),
              sizes=[str(s) for s in runs.loc[done].groupby("model_size")["params_total"]
                     .median().sort_values().index],
              epochs=sorted(float(e) for e in runs.loc[done, "epochs"].dropna().unique()),
              manifest=manifest, problems=problems)
