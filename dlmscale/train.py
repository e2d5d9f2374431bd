"""train_and_evaluate(config, workdir): the loop that turns a config into a finished, resumable run.

The host never waits on the device inside the loop: each step's scalars are fetched after the next
step has been dispatched. Checkpoints hold the train state and the data iterator together, so a run
resumed after a kill continues with exactly the batches, masks and parameters it would have had.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metrics as clu_metrics
from clu import parameter_overview

from dlmscale import checkpoint, compile_cache, data, evaluate, flops, hardware, phases, rundir, sharding
from dlmscale import steps as steps_lib
from dlmscale.errors import TrainingDiverged, UserError
from dlmscale.tb import ScalarWriter


def validate(config: ml_collections.ConfigDict) -> None:
  if config.objective not in ("ar", "mdm"):
    raise UserError(f"objective must be 'ar' or 'mdm', got {config.objective!r}")
  for key in ("unique_tokens", "batch_size"):
    if config[key] <= 0:
      raise UserError(f"{key} must be positive, got {config[key]}")
  if config.epochs <= 0:
    raise UserError(f"epochs must be positive, got {config.epochs}")
  if config.data.seq_len <= 1:
    raise UserError(f"data.seq_len must be at least 2, got {config.data.seq_len}")
  for key in ("log_every_steps",):
    if config[key] <= 0:
      raise UserError(f"{key} must be positive, got {config[key]}")
  for sect, key in (("eval", "every_steps"), ("checkpoint", "every_steps"), ("eval", "num_sequences"),
                    ("eval", "batch_size"), ("eval", "mc_samples")):
    if config[sect][key] <= 0:
      raise UserError(f"{sect}.{key} must be positive, got {config[sect][key]}")


def _fault_injection() -> tuple[str, int] | None:
  """Test hook: DLMSCALE_FAULT=kill:N (SIGKILL) or term:N (SIGTERM) sent to itself before step N."""
  spec = os.environ.get("DLMSCALE_FAULT", "")
  if not spec:
    return None
  kind, step = spec.split(":")
  return kind, int(step)


def _maybe_fault(fault: tuple[str, int] | None, step: int) -> None:
  if fault and fault[1] == step:
    os.kill(os.getpid(), {"kill": signal.SIGKILL, "term": signal.SIGTERM}[fault[0]])


class _StopFlag:
  """SIGTERM/SIGINT ask the loop to checkpoint at the current step and exit cleanly."""

  def __init__(self):
    self.signal: int | None = None
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal = signum

  def restore(self) -> None:
    for s, h in self._old.items():
      signal.signal(s, h)


class _Window:
  """Train scalars averaged (clu Average) between two log rows; its sums live in the checkpoint."""

  def __init__(self, sums: dict | None = None):
    sums = sums or {}
    self.loss = clu_metrics.Average(total=np.float64(sums.get("loss_total", 0.0)),
                                    count=np.int64(sums.get("count", 0)))
    self.t0, self.steps = time.perf_counter(), 0

  def add(self, loss: float) -> None:
    self.loss = self.loss.merge(clu_metrics.Average(total=np.float64(loss), count=np.int64(1)))
    self.steps += 1

  def sums(self) -> dict:
    return {"loss_total": float(self.loss.total), "count": int(self.loss.count)}


def _progress(step: int, total: int, loss: float, tok_s: float, mfu: float | None, epoch: float,
              eta_s: float) -> str:
  mfu_s = f" | MFU {100 * mfu:4.1f}%" if mfu is not None else ""
  return (f"step {step:>{len(str(total))}}/{total} | loss {loss:.4f} | {tok_s / 1e3:7.1f}k tok/s"
          f"{mfu_s} | epoch {epoch:7.2f} | ETA {time.strftime('%H:%M:%S', time.gmtime(eta_s))}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
                       ) -> dict[str, Any] | None:
  """Trains until the token budget is spent; returns the summary, or None if stopped by a signal."""
  validate(config)
  compile_cache.enable()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  primary = jax.process_index() == 0
  lock = rundir.WorkdirLock(workdir) if primary else None
  try:
    with phases.PhaseClock() as clock:
      return _run(config, workdir, primary, clock)
  finally:
    if lock:
      lock.release()


def _run(config: ml_collections.ConfigDict, workdir: pathlib.Path, primary: bool,
         clock: phases.PhaseClock) -> dict | None:
  if primary:
    rundir.claim_config(workdir, config)
  with clock.phase("data"):
    prepared = data.prepare(config.data)
  seq_len, batch = config.data.seq_len, config.batch_size
  total = data.steps_for_budget(config.unique_tokens, config.epochs, batch, seq_len)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(batch, mesh)
  sharding.check_batch(config.eval.batch_size, mesh, "eval.batch_size")
  setup = steps_lib.build(config, prepared.vocab_size, prepared.mask_id, total, mesh)
  with clock.phase("data"):
    val_NxL = data.val_chunks_for_eval(prepared, config.eval.num_sequences)
    it = data.train_iterator(prepared, unique_tokens=config.unique_tokens, epochs=config.epochs,
                             global_batch=batch, seed=config.seed, process_index=jax.process_index(),
                             process_count=jax.process_count())
  with clock.phase("checkpoint"):
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.checkpoint.keep)
  with jax.set_mesh(mesh), clock.phase("checkpoint"):
    restored = ckpt.restore_latest(setup.abstract_state)
    if restored is not None:
      _check_same_tokenizer(restored.meta, prepared)
      state, start, meta = restored.state, restored.step, restored.meta
      it.set_state(restored.data_state)
    else:
      state, start, meta = setup.init(), 0, {}
  if start >= total and (workdir / "summary.json").exists():
    print(f"{workdir}: already finished ({total} steps); nothing to do.")
    ckpt.close()
    return json.loads((workdir / "summary.json").read_text())
  loop = _Loop(config, workdir, primary, prepared, setup, total, val_NxL, ckpt, it, meta, start, clock)
  if primary and start == 0:
    overview = parameter_overview.get_parameter_overview(state.params, include_stats=False)
    (workdir / "params.txt").write_text(overview + "\n")
  print(f"{config.objective} {setup.model_cfg.n_layers}L d{setup.model_cfg.d_model}: "
        f"{loop.counts['non_embedding'] / 1e6:.3f}M non-embedding params, {total} steps of "
        f"{batch}x{seq_len} tokens" + (f", resuming at step {start}" if start else ""), flush=True)
  with jax.set_mesh(mesh):
    return loop.run(state)


def _check_same_tokenizer(meta: dict, prepared: data.Prepared) -> None:
  saved = meta.get("tokenizer_sha256")
  if saved and saved != prepared.tokenizer_sha256:
    raise UserError(
        f"the checkpoint was trained with tokenizer sha256 {saved[:12]}..., but the prepared data "
        f"in {prepared.root} uses {prepared.tokenizer_sha256[:12]}... Resume with the same data "
        "and tokenizer (same corpus, data.* settings and Python version), or start a new --workdir.")


class _Loop:
  """The state of one training loop: counters, logs and the pending (one-step-late) metrics."""

  def __init__(self, config, workdir, primary, prepared, setup, total, val_NxL, ckpt, it, meta, start,
               clock: phases.PhaseClock):
    self.config, self.workdir, self.primary, self.clock = config, workdir, primary, clock
    self.prepared, self.setup, self.total, self.val_NxL = prepared, setup, total, val_NxL
    self.ckpt, self.it, self.start = ckpt, it, start
    self.seq_len, self.batch = config.data.seq_len, config.batch_size
    self.counts = flops.param_counts(setup.model_cfg)
    self.flops_per_step = flops.train_flops_per_step(setup.model_cfg, self.seq_len, self.batch)
    self.budget_chunks = math.ceil(config.unique_tokens / self.seq_len)
    self.wall_before = float(meta.get("wall_s", 0.0))
    self.window = _Window(meta.get("window"))
    self.t_start = time.perf_counter()
    self.log = rundir.MetricsLog(workdir / "metrics.jsonl", start) if primary else None
    self.tb = ScalarWriter(workdir / "tb") if primary and config.tensorboard else None
    peak, self.peak_src = hardware.peak_flops_per_device()
    self.peak = peak * jax.device_count() if peak else None
    self.last_eval_step = -1

  def wall_s(self) -> float:
    return self.wall_before + time.perf_counter() - self.t_start

  def coords(self, step: int) -> dict:
    tokens = step * self.batch * self.seq_len
    return {"step": step, "tokens_seen": tokens, "epoch": step * self.batch / self.budget_chunks,
            "flops": step * self.flops_per_step, "wall_s": round(self.wall_s(), 3)}

  def write(self, row: dict, tb_scalars: dict) -> None:
    if self.log:
      self.log.write(row)
    if self.tb:
      self.tb.write_scalars(row["step"], tb_scalars)

  def consume(self, step: int, m: dict) -> None:
    """Handles the fetched scalars of `step` (1-based: the state after `step` updates)."""
    loss = float(m["loss"])
    if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
      raise TrainingDiverged(
          f"loss is {loss} (grad norm {float(m['grad_norm'])}) at step {step}; stopping. The last "
          f"good checkpoint in {self.workdir / 'checkpoints'} is kept. Lower optim.lr or raise "
          "optim.warmup_frac, and start a new --workdir.")
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
      print(_progress(step, self.total, avg, tok_s, mfu, row["epoch"], eta), flush=True)
    self.window = _Window()

  def evaluate(self, step: int, params) -> dict:
    put = lambda x: sharding.global_batch_to_device(x, self.setup.batch_sharding)
    per_seq = evaluate.per_sequence_losses(self.setup.eval_step, params, self.val_NxL,
                                           self.config.eval.batch_size, put)
    v = evaluate.summarise(per_seq, self.seq_len)
    row = {**self.coords(step), "split": "eval", "loss": v.loss, "loss_se": v.loss_se,
           "n_tokens": v.n_tokens}
    self.write(row, {"eval/loss": v.loss})
    if self.primary:
      print(f"eval step {step}: loss {v.loss:.4f} +/- {v.loss_se:.4f} nats/token "
            f"({v.n_sequences} sequences)", flush=True)
    self.last_eval_step = step
    return row

  def save(self, step: int, state) -> None:
    meta = {"wall_s": self.wall_s(), "window": self.window.sums(),
            "tokenizer_sha256": self.prepared.tokenizer_sha256, "step": step}
    self.ckpt.save(step, state, self.it.get_state(), meta)

  def run(self, state) -> dict | None:
    stop, fault = _StopFlag(), _fault_injection()
    pending = None
    try:
      for step in range(self.start + 1, self.total + 1):
        _maybe_fault(fault, step)
        with self.clock.phase("data"):
          tokens = next(self.it)["tokens"]
        with self.clock.phase("train"):
          state, metrics = self.setup.train_step(state, steps_lib.put_batch(tokens, self.setup))
          if pending is not None:
            self.consume(*pending)
          pending = (step, metrics)
          boundary = step == self.total or stop.signal is not None
          if (step % self.config.eval.every_steps == 0 or step % self.config.checkpoint.every_steps == 0
              or boundary):
            self.consume(*jax.device_get(pending))
            pending = None
        if step % self.config.eval.every_steps == 0 or step == self.total:
          with self.clock.phase("eval"):
            self.evaluate(step, state.params)
        if step % self.config.checkpoint.every_steps == 0 or boundary:
          with self.clock.phase("checkpoint"):
            self.save(step, state)
        if stop.signal is not None and step < self.total:
          with self.clock.phase("checkpoint"):
            self.ckpt.wait()
          print(f"stopped by signal {stop.signal} at step {step}/{self.total}; checkpoint saved. "
                "Re-run the same command to resume.", flush=True)
          return None
      with self.clock.phase("checkpoint"):
        self.ckpt.wait()  # the last save is complete before summary.json says the run is done
      return self.finish()
    finally:
      stop.restore()
      self.ckpt.close()
      for f in (self.log, self.tb):
        if f:
          f.close()

  def finish(self) -> dict:
    rows = rundir.read_rows(self.workdir / "metrics.jsonl") if self.primary else []
    evals = [r for r in rows if r["split"] == "eval"]
    best, final = rundir.best_eval(rows), (evals[-1] if evals else None)
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
        "best_step": best and best["step"], "best_epoch": best and best["epoch"],
        "tokenizer_sha256": self.prepared.tokenizer_sha256, "data_dir": str(self.prepared.root),
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(), "process_count": jax.process_count(),
        "phases": self.clock.summary(),  # of this attempt, in seconds (dlmscale/phases.py)
    }
    if self.primary:
      rundir.write_json_atomic(self.workdir / "summary.json", summary)
      print(f"done: {self.workdir / 'summary.json'} (final eval loss {summary['final_eval_loss']:.4f})")
    return summary
