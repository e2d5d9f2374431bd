"""train_and_evaluate(config, workdir): the loop that turns a config into a finished, resumable run.

The host never waits on the device inside the loop: each step's scalars are fetched after the next
step has been dispatched. Checkpoints hold the train state and the data iterator together, so a run
resumed after a kill continues with exactly the batches, masks and parameters it would have had.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any

import jax
import ml_collections
from clu import parameter_overview

from dlmscale import run_dir
from dlmscale.data import evalset, pipeline
from dlmscale.errors import TrainingDiverged, set_crash_dir
from dlmscale.eval import choices, val_loss
from dlmscale.model import flops
from dlmscale.runtime import compile_cache, hardware, sharding
from dlmscale.train import cadence, checkpoint, open_run, progress, steps, stops, task_curve, timer
from dlmscale.train.config_checks import validate
from dlmscale.train.profiler import ProfileWindow
from dlmscale.train.tracking import Trackers


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       allow_new_data: bool = False) -> dict[str, Any] | None:
  """Trains until the token budget is spent; returns the summary, or None if stopped by a signal.

  Everything that can fail on the user's input (the config, the workdir, the data, the mesh, the
  model, the task items) is checked before the workdir is created or touched, so a failed start
  leaves it as it was. Then, in one line: build -> claim the workdir -> resume -> loop.
  """
  validate(config)
  workdir = run_dir.check_workdir(workdir)
  compile_cache.enable()
  with timer.PhaseClock() as clock:
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch(config.batch_size, mesh)
    sharding.check_batch(config.eval.batch_size, mesh, "eval.batch_size")
    if config.get("micro_batch_size", 0):
      sharding.check_batch(config.micro_batch_size, mesh, "micro_batch_size")
    built = open_run.build(config, mesh, clock)
    config = built.config  # model.remat=auto resolved (open_run.resolve_remat)
    with clock.phase("data"):
      prepared = built.data.prepared
      val_set, iterator = pipeline.training_inputs(config, prepared, jax.process_index(), jax.process_count())
      items = task_curve.build_items(config, prepared, built.setup.model_cfg.max_len)
    lock = _claim(config, workdir, prepared, allow_new_data)
    set_crash_dir(workdir)  # an internal error from here on leaves its traceback in the run directory
    try:
      with clock.phase("checkpoint"):
        ckpt = checkpoint.Checkpointer(run_dir.checkpoints_dir(workdir), int(config.checkpoint.keep),
                                       set_aside_unreadable=True, protect=cadence.branch_steps(config))
        try:
          restored = open_run.resume(built, ckpt, workdir)
        except BaseException:
          ckpt.close()
          raise
      if restored.step:
        iterator.set_state(restored.data_state)
      return _run(TrainRun(built, workdir, val_set, iterator, items, ckpt, restored), clock)
    finally:
      if lock:
        lock.release()


def _claim(config: ml_collections.ConfigDict, workdir: pathlib.Path, prepared: pipeline.Prepared,
           allow_new_data: bool) -> run_dir.WorkdirLock | None:
  """The workdir, taken once all is built: created, locked and its config (with the prepared data's
  hashes) written or checked against the stored one. The primary host alone writes."""
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() != 0:
    return None
  lock = run_dir.WorkdirLock(workdir)
  try:
    run_dir.claim_config(workdir, config, prepared.sha256s(), allow_new_data)
  except BaseException:
    lock.release()
    raise
  return lock


@dataclasses.dataclass(frozen=True, eq=False)
class TrainRun:
  """Everything the loop reads, in one object: the built run, its workdir, what only training needs
  and the state it continues from."""
  built: open_run.Built
  workdir: pathlib.Path
  val_set: evalset.EvalSet
  iterator: Any
  items: list[choices.McItem] | None
  ckpt: checkpoint.Checkpointer
  restored: checkpoint.Restored


def _run(run: TrainRun, clock: timer.PhaseClock) -> dict | None:
  config, workdir, setup = run.built.config, run.workdir, run.built.setup
  total, start = run.built.data.total_steps, run.restored.step
  if start >= total and run_dir.is_finished(workdir):
    print(f"{workdir}: already finished ({total} steps); nothing to do.")
    run.ckpt.close()
    return run_dir.read_summary(workdir)
  primary = jax.process_index() == 0
  loop = _Loop(run, primary, clock)
  if primary and start == 0:
    overview = parameter_overview.get_parameter_overview(run.restored.state.params, include_stats=False)
    run_dir.write_text_atomic(workdir / run_dir.PARAMS, overview + "\n")
  print(f"{config.objective} {setup.model_cfg.n_layers}L d{setup.model_cfg.d_model}: "
        f"{loop.counts['non_embedding'] / 1e6:.3f}M non-embedding params, {total} steps of "
        f"{config.batch_size}x{config.data.seq_len} tokens"
        + (f", resuming at step {start}" if start else ""), flush=True)
  with jax.set_mesh(setup.mesh):
    return loop.train(run.restored.state)


def _metrics_lost(log: run_dir.MetricsLog, start: int) -> bool:
  """Says (once, on stdout) what a resume found missing from the metrics log; True if rows are lost."""
  if start == 0 or (log.last_step is not None and not log.dropped):
    return False
  what = (f"had {log.dropped} unreadable row(s)" if log.last_step is not None
          else "was missing or held no readable row")
  print(f"warning: {log.path} {what}; the rows before step {start} that it lacks cannot be rebuilt "
        "(checkpoints hold parameters, not curves), so the restored step is evaluated again and the "
        "curve continues from there", flush=True)
  return True


class _Loop:
  """The state of one training loop: counters, logs and the pending (one-step-late) metrics."""

  def __init__(self, run: TrainRun, primary: bool, clock: timer.PhaseClock):
    config, meta = run.built.config, run.restored.meta
    self.run, self.config, self.workdir, self.primary, self.clock = run, config, run.workdir, primary, clock
    self.setup, self.total, self.start = run.built.setup, run.built.data.total_steps, run.restored.step
    self.prepared = run.built.data.prepared
    self.seq_len, self.batch = config.data.seq_len, config.batch_size
    self.counts = flops.param_counts(self.setup.model_cfg)
    self.flops_per_step = flops.train_flops_per_step(self.setup.model_cfg, self.seq_len, self.batch)
    self.budget_chunks = math.ceil(config.unique_tokens / self.seq_len)
    self.wall_before = float(meta.get("wall_s", 0.0))
    self.window = progress.Window(meta.get("window"))
    self.t_start = time.perf_counter()
    self.log = run_dir.MetricsLog(self.workdir, self.start) if primary else None
    self.tb = Trackers(config, self.workdir) if primary else None
    peak, self.peak_src = hardware.peak_flops_per_device()
    self.peak = peak * jax.device_count() if peak else None
    self.last_eval_step = -1
    self.cadence = cadence.Cadence(config, self.total)
    self.task = task_curve.TaskCurve(run.built, run.items) if run.items else None
    # on the devices for the whole run: an evaluation is then one program and one fetch
    self.val_batches = val_loss.place(run.val_set.tokens_NxL, config.eval.batch_size, self.setup.put_batches)
    self.reevaluate_start = (bool(self.log) and not meta.get(open_run.FROM_TRUNK)
                             and _metrics_lost(self.log, self.start) and jax.process_count() == 1)

  def wall_s(self) -> float:
    return self.wall_before + time.perf_counter() - self.t_start

  def coords(self, step: int) -> dict:
    tokens = step * self.batch * self.seq_len
    return {"step": step, "tokens_seen": tokens, "epoch": step * self.batch / self.budget_chunks,
            "flops": step * self.flops_per_step,  # as counted (causal attention at half)
            "flops_6nd": 6 * self.counts["non_embedding"] * tokens,  # the published laws' convention
            "wall_s": round(self.wall_s(), 3)}

  def write(self, row: dict, tb_scalars: dict) -> None:
    if self.log:
      self.log.write(row)
    if self.tb:
      self.tb.write_scalars(row["step"], tb_scalars)

  def consume(self, step: int, m: dict) -> None:
    """Handles the fetched scalars of `step` (1-based: the state after `step` updates)."""
    loss = float(m["loss"])
    if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
      kept = self.run.ckpt.steps()
      where = (f"The last good checkpoint (step {kept[-1]}) in {run_dir.checkpoints_dir(self.workdir)} is "
               "kept." if kept else "No checkpoint had been saved yet.")
      raise TrainingDiverged(
          f"loss is {loss} (grad norm {float(m['grad_norm'])}) at step {step}; stopping. {where} "
          "Lower optim.lr or raise optim.warmup_frac, and start a new --workdir.")
    self.window.add(loss)
    if step % self.config.log_every_steps and step != self.total:
      return
    dt = time.perf_counter() - self.window.t0
    tok_s = self.window.steps * self.batch * self.seq_len / max(dt, 1e-9)
    mfu = self.window.steps * self.flops_per_step / max(dt, 1e-9) / self.peak if self.peak else None
    avg = float(self.window.loss.compute())
    row = {**self.coords(step), "split": "train", "loss": avg, "grad_norm": float(m["grad_norm"]),
           "lr": float(m["lr"]), "tokens_per_s": tok_s}
    if mfu is not None:
      row["mfu"] = mfu
    self.write(row, {"train/loss": avg, "train/grad_norm": row["grad_norm"], "train/lr": row["lr"]})
    eta = (self.total - step) * dt / max(self.window.steps, 1)
    if self.primary:
      print(progress.line(step, self.total, avg, tok_s, mfu, row["epoch"], eta), flush=True)
    self.window = progress.Window()

  def evaluate(self, step: int, params, write: bool = True) -> dict:
    per_seq = val_loss.per_sequence_losses(self.setup.eval_all, params, self.val_batches)
    v = val_loss.summarise(per_seq, self.seq_len, self.run.val_set.document_N)
    row = {**self.coords(step), "split": "eval", "loss": v.loss, "loss_se": v.loss_se,
           "loss_se_naive": v.loss_se_naive, "n_tokens": v.n_tokens, "n_sequences": v.n_sequences,
           "eval_documents": v.eval_documents}
    if self.primary and write:  # per-sequence losses first: a metrics row always has its file
      evalset.save_losses(run_dir.losses_path(self.workdir, step), per_seq, self.run.val_set)
    if write:
      self.write(row, {"eval/loss": v.loss})
    if self.primary and write:
      print(f"eval step {step}: loss {v.loss:.4f} +/- {v.loss_se:.4f} nats/token "
            f"({v.n_sequences} sequences, {v.eval_documents} documents)", flush=True)
    if self.task and self.task.due(step, self.total):  # on every host: the scoring is collective
      mc = {**self.coords(step), "split": "mc", **self.task.row(params)}
      if self.primary and write:  # per-item scores first, as for the validation rows
        task_curve.save_item_scores(run_dir.losses_path(self.workdir, step, "mc"), self.task.last_items)
      if write:
        self.write(mc, {"task/accuracy": mc["mc_accuracy"], "task/nll_gap": mc["mc_nll_gap"]})
        if self.primary:
          print(task_curve.describe(mc), flush=True)
    self.last_eval_step = step
    return row

  def save(self, step: int, state) -> None:
    meta = {"wall_s": self.wall_s(), "window": self.window.sums(),
            "tokenizer_sha256": self.prepared.tokenizer_sha256, "step": step,
            "data_sha256": self.prepared.sha256s()}
    self.run.ckpt.save(step, state, self.run.iterator.get_state(), meta)

  def train(self, state) -> dict | None:
    stop, fault = stops.StopFlag(), stops.fault_injection()
    pending, profile = None, ProfileWindow(self.config.get("profile_steps", ""), self.workdir)
    try:
      if self.reevaluate_start:
        with self.clock.phase("eval"):
          self.evaluate(self.start, state.params)
      for step in range(self.start + 1, self.total + 1):
        state = stops.maybe_fault(fault, step, state)
        profile.before(step)
        with self.clock.phase("data"):
          tokens = next(self.run.iterator)["tokens"]
        with self.clock.phase("train"):
          state, metrics = self.setup.train_step(state, steps.put_batch(tokens, self.setup))
          self.clock.first_step(metrics, announce=self.primary)
          profile.after(step, state)
          if pending is not None:
            self.consume(*pending)
          pending = (step, metrics)
          boundary = step == self.total or stop.signal is not None
          if self.cadence.eval_due(step) or self.cadence.save_due(step) or boundary:
            self.consume(*jax.device_get(pending))
            pending = None
        if self.cadence.eval_due(step):
          with self.clock.phase("eval"):
            self.evaluate(step, state.params)
        if self.cadence.save_due(step) or boundary:
          with self.clock.phase("checkpoint"):
            self.save(step, state)
        if stop.signal is not None and step < self.total:
          with self.clock.phase("checkpoint"):
            self.run.ckpt.wait()
          print(f"stopped by signal {stop.signal} at step {step}/{self.total}; checkpoint saved. "
                "Re-run the same command to resume.", flush=True)
          return None
      with self.clock.phase("checkpoint"):
        self.run.ckpt.wait()  # the last save is complete before the summary says the run is done
      return self.finish(state)
    finally:
      profile.stop()
      self.run.ckpt.close()  # under the loop's handler: a stop now cannot cut a save short
      for f in (self.log, self.tb):
        if f:
          f.close()
      stop.restore()

  def finish(self, state) -> dict:
    rows = run_dir.read_metrics(self.workdir) if self.primary else []
    if self.last_eval_step != self.total:  # resumed at the end: the same decision on every host
      has_final = any(r.get("split") == "eval" and r["step"] == self.total for r in rows)
      self.evaluate(self.total, state.params, write=not has_final)
      rows = run_dir.read_metrics(self.workdir) if self.primary else []
    evals = [r for r in rows if r.get("split") == "eval"]
    best, final = run_dir.best_eval(rows), (evals[-1] if evals else None)
    c = self.config
    summary = {
        "run_name": c.run_name, "objective": c.objective, "model_size": c.model_size,
        "params_total": self.counts["total"], "params_non_embedding": self.counts["non_embedding"],
        "params_embedding": self.counts["embedding"], "unique_tokens": c.unique_tokens,
        "unique_tokens_used": self.budget_chunks * self.seq_len, "epochs": c.epochs,
        "steps": self.total, "batch_size": self.batch, "seq_len": self.seq_len,
        "vocab_size": self.prepared.vocab_size, "seed": c.seed, **self.coords(self.total),
        "flops_per_token": flops.flops_per_token(self.setup.model_cfg, self.seq_len),
        "final_eval_loss": final and final["loss"], "final_eval_loss_se": final and final["loss_se"],
        "best_eval_loss": best and best["loss"], "best_eval_loss_se": best and best["loss_se"],
        "n_sequences": self.run.val_set.tokens_NxL.shape[0], "eval_documents": self.run.val_set.n_documents,
        "eval_se": "clustered by document", "eval_set": c.eval.get("set", "val"),
        "val_unigram_entropy": self.run.val_set.unigram_entropy,
        "best_step": best and best["step"], "best_epoch": best and best["epoch"],
        "tokenizer_sha256": self.prepared.tokenizer_sha256, "data_dir": str(self.prepared.root),
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(), "process_count": jax.process_count(),
        "phases": self.clock.summary(),  # of this attempt, in seconds (train/timer.py)
        **self.clock.startup_summary(),  # of this attempt (a stack's: shared by its members)
    }
    if self.primary:
      path = run_dir.write_summary(self.workdir, summary)
      print(f"done: {path} (final eval loss {summary['final_eval_loss']:.4f})")
    return summary
