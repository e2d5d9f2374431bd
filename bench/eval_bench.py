"""How many diffusion time samples K does validation need? Standard error and wall time against K.

  python bench/eval_bench.py [--workdir=RUN] [--ks=1,4,16,32] [--seeds=3] [--epochs=2]

RUN is a diffusion run (default: the quickstart mdm config); one with no checkpoint yet (or no
--workdir, which uses a temporary directory) is trained first, for --epochs of the quickstart budget.
For each K the validation ELBO is computed with --seeds different eval seeds, by two estimators
from the same forward passes: "time" (weight 1/t with t clipped at config.mdm.t_min: the trainer's
eval number, checked) and "count" (weight E[1/t | mask set] = (L + 1) / |S|: the same mean, see
mc_scoring.elbo_weights; here on the same clipped draws, which shifts it by O(t_min)). Columns:

  se_seq   standard error over sequences, as training reports it (data spread + sampling noise)
  se_mc    sampling noise alone of the reported mean: sqrt(mean over sequences of the variance
           across seeds / N); what changes if only the eval seed changes
  wall_s   one validation pass (compiled; the median over seeds), and ms per sequence
"""

from __future__ import annotations

import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from configs import quickstart  # noqa: E402
from dlmscale import objectives  # noqa: E402
from dlmscale.train import checkpoint
from dlmscale.eval import choices as mc_scoring
from dlmscale.train import open_run as restore
from dlmscale.train import loop as train
from dlmscale.eval import val_loss as validation
from dlmscale.data import pipeline
from dlmscale.objectives.masking import make_schedule  # noqa: E402
from dlmscale.commands.guard import cli_main  # noqa: E402
from dlmscale.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "a diffusion run; trained first if it has no checkpoint")
_KS = flags.DEFINE_list("ks", ["1", "4", "16", "32"], "time samples per sequence to compare")
_SEEDS = flags.DEFINE_integer("seeds", 3, "eval seeds per K (for the sampling noise)")
_EPOCHS = flags.DEFINE_float("epochs", 2.0, "epochs of the quickstart budget when training a run")
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 0, "validation chunks (0: the run's config)")


def ensure_run(workdir: pathlib.Path, epochs: float) -> None:
  if checkpoint.saved_steps(workdir / "checkpoints"):
    return
  cfg = quickstart.get_config("objective=mdm")
  cfg.epochs = epochs
  print(f"training a quickstart mdm run for {epochs} epochs in {workdir} ...", flush=True)
  train.train_and_evaluate(cfg, workdir)


def _terms_fn(run: restore.Loaded, k: int, seed: int):
  """Per-sequence (t, n_masked, masked NLL sum) for K = k draws: both estimators from one pass."""
  schedule = make_schedule(run.config.mdm.schedule, run.config.mdm.poly_exponent)

  def terms(params, tokens_BxL, ids_B):
    B, L = tokens_BxL.shape
    return mc_scoring.choice_draws(
        params, run.setup.apply_fn, tokens_BxL, jnp.zeros((B,), jnp.int32), jnp.full((B,), L), ids_B,
        mask_id=run.data.prepared.mask_id, schedule=schedule, num_samples=k, seed=seed,
        t_min=float(run.config.mdm.t_min))
  return jax.jit(terms), schedule


def measure(run: restore.Loaded, k: int, seeds: int, val_NxL: np.ndarray) -> dict:
  """Per-sequence ELBOs (nats/token) of both estimators for `seeds` eval seeds at K = k."""
  batch, (n, L) = int(run.config.eval.batch_size), val_NxL.shape
  est = {"time": np.zeros((seeds, n)), "count": np.zeros((seeds, n))}
  walls = []
  for r in range(seeds):
    fn, schedule = _terms_fn(run, k, int(run.config.eval.seed) + r)
    with jax.set_mesh(run.setup.mesh):
      fn(run.params, run.put(val_NxL[:batch]), run.put(np.arange(batch, dtype=np.int32)))  # compile
      t0 = time.perf_counter()
      for lo in range(0, n, batch):
        ids = np.minimum(np.arange(lo, lo + batch), n - 1)
        t, cnt, tot = (np.asarray(x, np.float64) for x in jax.device_get(
            fn(run.params, run.put(val_NxL[ids]), run.put(ids.astype(np.int32)))))
        keep = np.arange(lo, lo + batch) < n
        for name in est:
          w = np.asarray(mc_scoring.elbo_weights(name, schedule, t, cnt, np.full(batch, L)))
          est[name][r, ids[keep]] = (w * tot).mean(axis=0)[keep] / L
      walls.append(time.perf_counter() - t0)
  out = {"k": k, "wall_s": float(np.median(walls)), "ms_per_seq": 1e3 * float(np.median(walls)) / n}
  for name, x_RxN in est.items():
    se_mc = float(np.sqrt(np.mean(np.var(x_RxN, axis=0, ddof=1)) / n)) if seeds > 1 else float("nan")
    out[name] = {"loss": float(x_RxN[0].mean()), "se_seq": validation.summarise(x_RxN[0], L).loss_se,
                 "se_mc": se_mc, "seed_means": x_RxN.mean(axis=1).tolist(), "per_seq": x_RxN[0]}
  return out


def check_matches_training_eval(run: restore.Loaded, val_NxL: np.ndarray, k: int, per_seq_N) -> float:
  """The "time" estimator here is the trainer's eval number: the largest per-sequence difference."""
  c = run.config.copy_and_resolve_references()
  c.eval.mc_samples = k
  eval_fn = objectives.make_eval_fn(c, run.data.prepared.mask_id)
  eval_all = jax.jit(validation.eval_all_fn(eval_fn, run.setup.apply_fn))
  with jax.set_mesh(run.setup.mesh):
    batches = validation.place(val_NxL, int(c.eval.batch_size), run.setup.put_batches)
    ref = validation.per_sequence_losses(eval_all, run.params, batches)
  return float(np.max(np.abs(ref - per_seq_N)))


def main(argv) -> None:
  del argv
  workdir = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="eval_bench_"))
  ensure_run(workdir, _EPOCHS.value)
  run = restore.load(workdir)
  if run.config.objective != "mdm":
    raise UserError(f"{workdir} is an {run.config.objective} run; this benchmark needs a diffusion run")
  prepared = run.data.prepared
  val_NxL = pipeline.eval_set(prepared, _NUM_SEQUENCES.value or run.config.eval.num_sequences).tokens_NxL
  print(f"run {workdir} (step {run.step}), {len(val_NxL)} validation sequences of "
        f"{prepared.seq_len} tokens, {jax.device_count()} {jax.default_backend()} device(s), "
        f"{_SEEDS.value} eval seeds per K")
  print(f"{'K':>4} {'estimator':>9} {'loss':>8} {'se_seq':>8} {'se_mc':>8} {'wall_s':>8} "
        f"{'ms/seq':>8}  seed means")
  for i, k in enumerate(int(x) for x in _KS.value):
    m = measure(run, k, _SEEDS.value, val_NxL)
    if i == 0:
      diff = check_matches_training_eval(run, val_NxL, k, m["time"]["per_seq"])
      print(f"(check: 'time' equals the trainer's eval to {diff:.1e} nats per sequence)")
    for name in ("time", "count"):
      e = m[name]
      means = " ".join(f"{x:.4f}" for x in e["seed_means"])
      print(f"{k:>4} {name:>9} {e['loss']:8.4f} {e['se_seq']:8.4f} {e['se_mc']:8.4f} "
            f"{m['wall_s']:8.2f} {m['ms_per_seq']:8.2f}  {means}", flush=True)


if __name__ == "__main__":
  flags.FLAGS(sys.argv)
  sys.exit(cli_main(lambda: main(None)))
