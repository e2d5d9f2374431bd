"""Fabricates run directories in the trainer's format (dlmscale/run_dir.py) for analysis tests.

Losses follow a known data-constrained law per family (AR: R_D* = 4 plus a mild overfitting term;
MDM: R_D* = 100, worse per token), so tests can check that collect/report recover the truth.
The analysis tests import make_run / make_grid from here.
"""

from __future__ import annotations

import json
import math
import pathlib
import zlib

import numpy as np

LAWS = {
    "ar": dict(E=2.0, A=60.0, alpha=0.34, B=60.0, beta=0.30, R_D_star=4.0, overfit=0.03),
    "mdm": dict(E=2.0, A=80.0, alpha=0.34, B=80.0, beta=0.30, R_D_star=100.0, overfit=0.0),
}
SEQ_LEN, BATCH = 64, 8
EVAL_SE = 0.004


def true_loss(objective: str, n: float, d: float, u: float, bump: float = 0.0,
              bump_epoch: float = 8.0) -> float:
  """E + A/N^alpha + B/D'^beta with D' the effective data; AR also overfits past 8 epochs."""
  p = LAWS[objective]
  unique = min(u, d)
  r_d = max(d / unique - 1.0, 0.0)
  d_eff = unique * (1.0 + p["R_D_star"] * (1.0 - math.exp(-r_d / p["R_D_star"])))
  epochs = d / u
  loss = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d_eff ** p["beta"]
  loss += p["overfit"] * max(0.0, math.log(epochs / 8.0))
  loss += bump * math.exp(-math.log(max(epochs, 1e-9) / bump_epoch) ** 2 / (2 * 0.25 ** 2))
  return loss


def size_name(n: float) -> str:
  return f"m{n / 1e3:g}K"


def make_run(root: pathlib.Path, *, objective: str, n: float, u: float, epochs: float,
             seed: int = 0, finished: bool = True, n_eval: int = 4, noise: float = EVAL_SE,
             mc_accuracy: float | None = None, bump: float = 0.0, drop_summary_keys=(),
             name: str | None = None, config_extra: dict | None = None,
             loss_shift: float = 0.0, unigram_entropy: float | None = None) -> pathlib.Path:
  """One run directory; an unfinished run stops halfway and has no summary.json.
  config_extra: dotted config keys ("data.label_noise": 0.2); loss_shift: added to every eval;
  unigram_entropy: the summary's val_unigram_entropy (runs from before the record have none)."""
  name = name or f"{objective}_{size_name(n)}_U{u:g}_E{epochs:g}_s{seed}"
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  run = root / name
  run.mkdir(parents=True)
  d_total = u * epochs
  steps = int(d_total // (BATCH * SEQ_LEN))
  config = dict(objective=objective, model_size=size_name(n), unique_tokens=u, epochs=epochs,
                seed=seed, batch_size=BATCH, run_name=name,
                data=dict(seq_len=SEQ_LEN, vocab_size=2048))
  for dotted, value in (config_extra or {}).items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  (run / "config.json").write_text(json.dumps(config))
  stop = 0.5 if not finished else 1.0
  rows = []
  evals = []
  for k in range(1, 9):
    f = stop * k / 8
    step = int(round(f * steps))
    tokens = step * BATCH * SEQ_LEN
    rows.append(dict(step=step, split="train", loss=true_loss(objective, n, max(tokens, 1), u)
                     + 0.05, tokens_seen=tokens, epoch=tokens / u, flops=6.0 * n * tokens,
                     wall_s=0.1 * step))
  for k in range(1, n_eval + 1):
    f = stop * k / n_eval
    step = int(round(f * steps))
    tokens = step * BATCH * SEQ_LEN
    loss = true_loss(objective, n, tokens, u, bump=bump) + loss_shift + rng.normal(0, noise)
    row = dict(step=step, split="eval", loss=loss, loss_se=EVAL_SE, n_tokens=4096,
               tokens_seen=tokens, epoch=tokens / u, flops=6.0 * n * tokens, wall_s=0.1 * step)
    rows.append(row)
    evals.append(row)
  rows.sort(key=lambda r: (r["step"], r["split"]))
  with (run / "metrics.jsonl").open("w") as fh:
    for r in rows:
      fh.write(json.dumps(r) + "\n")
  if finished:
    best = min(evals, key=lambda r: r["loss"])
    last = evals[-1]
    summary = dict(objective=objective, model_size=config["model_size"], params_total=1.5 * n,
                   params_non_embedding=n, unique_tokens=u, epochs=epochs,
                   tokens_seen=last["tokens_seen"], flops=last["flops"], seed=seed, steps=steps,
                   final_eval_loss=last["loss"], final_eval_loss_se=EVAL_SE,
                   best_eval_loss=best["loss"], best_eval_loss_se=EVAL_SE,
                   best_step=best["step"], best_epoch=best["epoch"], run_name=name)
    if unigram_entropy is not None:
      summary["val_unigram_entropy"] = unigram_entropy
    for k in drop_summary_keys:
      summary.pop(k)
    (run / "summary.json").write_text(json.dumps(summary))
  if mc_accuracy is not None:
    (run / "eval.json").write_text(json.dumps(dict(mc_accuracy=mc_accuracy)))
  return run


SIZES = (1e5, 3e5, 1e6, 3e6)
BUDGETS = (1e6, 3e6, 1e7)
EPOCHS = (1, 4, 16, 64)


def make_grid(root: pathlib.Path, *, sizes=SIZES, budgets=BUDGETS, epochs=EPOCHS,
              objectives=("ar", "mdm"), seeds=(0,), unfinished=(), **kw) -> list[str]:
  """Every (objective, size, U, E, seed); names listed in `unfinished` stop halfway."""
  names = []
  for obj in objectives:
    for n in sizes:
      for u in budgets:
        for e in epochs:
          for s in seeds:
            name = f"{obj}_{size_name(n)}_U{u:g}_E{e:g}_s{s}"
            make_run(root, objective=obj, n=n, u=u, epochs=e, seed=s,
                     finished=name not in unfinished, name=name, **kw)
            names.append(name)
  return names


def save_eval_losses(run: pathlib.Path, base_N: np.ndarray, doc_N: np.ndarray, rng: np.random.Generator,
                     noise: float) -> None:
  """Per-sequence losses for every eval row of a fake run: each sequence's difficulty `base_N` (shared
  across runs, so comparisons pair) plus noise, shifted to the row's mean loss."""
  from dlmscale import run_dir  # pylint: disable=g-import-not-at-top
  from dlmscale.data import evalset  # pylint: disable=g-import-not-at-top
  es = evalset.EvalSet(chunk_ids_N=np.arange(doc_N.size), document_N=doc_N,
                       tokens_NxL=np.zeros((doc_N.size, 2), np.int32))
  for r in (json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()):
    if r["split"] == "eval":
      loss_N = base_N + rng.normal(0, noise, doc_N.size)
      evalset.save_losses(run_dir.losses_path(run, r["step"]), loss_N - loss_N.mean() + r["loss"], es)
