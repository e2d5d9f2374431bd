"""Every default in one place. Other config files start from `base.get_config()` and override.

Durations are token budgets: `unique_tokens` (U) and `epochs` (E); the trainer derives
steps = floor(U * E / (batch_size * data.seq_len)) once.
"""

from __future__ import annotations

import ml_collections

from dlmscale.data.config import DataConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.objective = "ar"  # "ar" (causal, next-token) | "mdm" (masked diffusion, bidirectional)
  c.seed = 0  # fixes init, data order and masking
  c.run_name = ""  # set by sweeps; informational

  # Data: U unique tokens repeated for E epochs.
  c.unique_tokens = 1_000_000
  c.epochs = 1.0
  c.batch_size = 32  # global, in sequences
  c.micro_batch_size = 0  # > 0: sum each step's gradient over batch_size / micro_batch_size
  # micro-batches of this many sequences (less activation memory, same data and draws); 0 = off

  c.data = ml_collections.ConfigDict(DataConfig().to_dict())  # fields, defaults, help: dlmscale/data/config.py

  # Model: a ladder name (dlmscale/model/sizes.py) or "custom" with the fields below.
  c.model_size = "s1M"
  c.model = ml_collections.ConfigDict()
  c.model.d_model = 0  # 0 = from the ladder
  c.model.n_layers = 0
  c.model.n_heads = 0
  c.model.d_ff = 0
  c.model.dtype = "float32"  # activations/compute; "bfloat16" on accelerators
  c.model.param_dtype = "float32"  # master weights
  c.model.remat = "none"  # none | full | dots (jax.checkpoint policies) | auto: the least recompute
  # that fits the devices' memory, from the compiler's memory analysis (none on CPU; logged, in config.json)
  c.model.tie_embeddings = True
  c.model.attention = "xla"  # xla | cudnn | splash | auto (splash on TPU where the shape allows, else
  # xla; dlmscale/model/attention.py; the choice is printed and recorded in config.json). The cluster
  # preset (configs/grid.py) asks for auto; xla stays the default so grids launched before keep their hash.
  c.model.loss_chunk = 0  # > 0: loss over this many positions at a time, recomputing each chunk's
  # logits in the backward pass (never the full float32 [B, L, V] logits); 0 = full logits (exact golden)

  # Autoregressive.
  c.ar = ml_collections.ConfigDict()
  c.ar.num_orders = 1  # > 1: each training sequence read in one of N seeded orders (dlmscale/objectives/orders.py)
  c.ar.target_position = True  # N > 1: tell the model the position it predicts (False: as the authors' code)

  # Masked diffusion.
  c.mdm = ml_collections.ConfigDict()
  c.mdm.schedule = "linear"  # linear | cosine | poly
  c.mdm.poly_exponent = 2.0
  c.mdm.t_min = 1e-3  # training t clipped away from 0

  # Optimizer (same recipe for both families).
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3e-3
  c.optim.schedule = "cosine"  # cosine | wsd | constant
  c.optim.warmup_frac = 0.05
  c.optim.warmup_steps = 0  # > 0 overrides warmup_frac
  c.optim.min_lr_ratio = 0.1  # cosine floor / WSD end, as a fraction of lr
  c.optim.decay_frac = 0.2  # WSD: final fraction of steps spent decaying
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1
  c.optim.decay_norms_and_embeddings = False
  c.optim.grad_clip = 1.0

  # Evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 200  # eval.schedule=fixed: every N steps (and the last)
  c.eval.schedule = "fixed"  # fixed | log: eval.log_points steps spaced logarithmically (dense early), and the last
  c.eval.log_points = 16
  c.eval.num_sequences = 256  # validation chunks, round-robin over documents, same for every run
  c.eval.set = "val"  # "val": the claims' set | "tune": disjoint documents, for choosing lr (evalset.py)
  c.eval.batch_size = 64
  c.eval.mc_samples = 8  # diffusion ELBO time samples per sequence (K)
  c.eval.mdm_estimator = "count"  # ELBO sample weight: "count" ((L+1)/|masked|, linear schedule;
  # ~5x fewer samples for the same noise, see BENCHMARKS.md) or "time" (w(t) = 1/t, as trained)
  c.eval.mdm_positions = "all"  # "all" | "shifted": never mask position 0, score AR's L-1 positions
  c.eval.seed = 1234  # fixed: the eval number does not depend on the training seed
  c.eval.task_every = 0  # N > 0: also score the built-in multiple-choice task (validation split, as
  # python -m dlmscale.evaluate does) at every N-th evaluation and the final one: metrics rows with
  # split "mc" (accuracy, NLL gap of the other choices over the true one, SEs over items); 0 = off

  # WSD trunk and cooldown branches (configs/grid.py wsd_family): a trunk trains at a constant rate
  # (optim.schedule=constant) and keeps its checkpoint at each branch start; a branch
  # (optim.schedule=wsd) starts from the trunk's checkpoint at branch.start_step (the branch's own
  # decay start) and cools down to its end, bitwise the standalone WSD run of its length.
  c.trunk = ml_collections.ConfigDict()
  c.trunk.branch_steps = ()  # steps whose checkpoints branches start from (kept by checkpoint.keep)
  c.branch = ml_collections.ConfigDict()
  c.branch.trunk = ""  # the trunk's run directory (relative: beside this run's directory)
  c.branch.start_step = 0

  # Checkpoints and logging.
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 3
  c.log_every_steps = 20
  c.tensorboard = True  # scalars to RUN/tb (tensorboardX event files)
  # Weights & Biases beside TensorBoard (optional package: wandb==0.31.0, requirements-eval.txt):
  # project "" = off; mode online | offline (files under RUN/wandb, `wandb sync` later) | disabled;
  # name "" = run_name or the workdir's name. The wandb run id follows the workdir, so a resume
  # continues the same wandb run.
  c.wandb = ml_collections.ConfigDict({"project": "", "entity": "", "mode": "online", "name": ""})
  # "A:B": a jax.profiler trace of training steps A..B (1-based, inclusive) into RUN/profile
  # (open it with TensorBoard's profile plugin or Perfetto); "" = off.
  c.profile_steps = ""

  # Device mesh: sizes multiply to the device count; -1 = the rest.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  return c
