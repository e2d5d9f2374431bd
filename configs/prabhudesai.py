"""Prabhudesai et al. 2025 ("Diffusion Beats Autoregressive in Data-Constrained Settings",
arXiv:2507.15857) as published, ready to launch: docs/prabhudesai.md is the step-by-step page.

What is theirs (the paper and its released scripts, github.com/wmn-231314/diffusion-data-constraint,
examples_scaling/training/{arm,mdm}/example_training.sh, utils/model_params.sh, utils/epoch_tokens.sh):
  - C4 subsets of U = 25M / 50M / 100M unique tokens, the GPT-2 tokenizer, seq_len 2048, batch 256;
  - AdamW (0.9, 0.95, eps 1e-8), lr 2e-4 cosine to 2e-5, warmup 1% of the steps, weight decay 0.1,
    clip 1.0: one recipe for both families;
  - their model shapes, named as they name them (datablations' names, counting the embedding):
    d_model, n_layers and d_model / kv_size heads from model_params.sh, and their SwiGLU width
    d_ff = 64 floor(8 d_model / 3 / 64); tied embeddings (Megatron's default);
  - the epoch list up to 800, 32 Monte-Carlo samples per sequence for the diffusion evaluation.
The grid is their sizes x epochs x U; `max_flops` (6 N D with N counted as they count it, embedding
included) drops the points beyond the compute they report (docs/prabhudesai.md gives the count).

  python -m launch.local --config=configs/prabhudesai.py --workdir=runs/prabhudesai
  python -m launch.aot --config=configs/prabhudesai.py --topology=gpu:1x8 --gpu_target_config=FILE

Argument keys: scale (test|cluster), corpus, tokenizer, objectives, sizes (their names: 7M ... 2298M),
unique, epochs, seeds, max_flops (0 = no cap). `scale=test` runs the same data path on CPU on a small
local stand-in (a .json.gz JSONL and a locally built tokenizer.json, as the tests write).
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import c4, grid

# name: (d_model, ffw_size, kv_size, n_heads, n_layers), utils/model_params.sh of the released code
# (datablations' table). Their runs set d_ff = 64 floor(8 d / 3 / 64) instead of ffw_size and count
# N = 4 L d^2 + 3 L d d_ff + 6 L d + V d (V = 50257): the attention width is d_model, so this
# model uses d_model / kv_size heads (7 heads of 32 at 20M and 35M become 9 and 14: the same count).
SHAPES: dict[str, tuple[int, int, int, int, int]] = {
    "7M": (128, 512, 32, 4, 3), "14M": (224, 896, 32, 7, 4), "20M": (288, 1152, 32, 7, 5),
    "35M": (448, 1792, 32, 7, 6), "44M": (512, 2048, 64, 8, 8), "57M": (576, 2304, 64, 9, 9),
    "74M": (640, 2560, 64, 10, 10), "90M": (640, 2560, 64, 10, 13), "106M": (640, 2560, 64, 10, 16),
    "117M": (768, 3072, 64, 12, 12), "140M": (768, 3072, 64, 12, 15), "163M": (768, 3072, 64, 12, 18),
    "175M": (896, 3584, 64, 14, 14), "196M": (896, 3584, 64, 14, 16), "217M": (896, 3584, 64, 14, 18),
    "251M": (1024, 4096, 64, 16, 16), "278M": (1024, 4096, 64, 16, 18), "306M": (1024, 4096, 64, 16, 20),
    "425M": (1280, 5120, 128, 10, 18), "489M": (1280, 5120, 128, 10, 21), "509M": (1408, 5632, 128, 11, 18),
    "552M": (1280, 5120, 128, 10, 24), "587M": (1408, 5632, 128, 11, 21), "632M": (1536, 6144, 128, 12, 19),
    "664M": (1408, 5632, 128, 11, 24), "724M": (1536, 6144, 128, 12, 22), "816M": (1536, 6144, 128, 12, 25),
    "893M": (1792, 7168, 128, 14, 20), "1018M": (1792, 7168, 128, 14, 23), "1143M": (1792, 7168, 128, 14, 26),
    "1266M": (2048, 8192, 128, 16, 22), "1429M": (2048, 8192, 128, 16, 25), "1593M": (2048, 8192, 128, 16, 28),
    "2007M": (2304, 9216, 128, 18, 28), "2298M": (2560, 10240, 128, 20, 26),
}
GPT2_VOCAB = 50_257
# Tokens in each released C4 subset (utils/epoch_tokens.sh): U is their "25M" etc.
SUBSET_TOKENS = {25_000_000: 24_743_247, 50_000_000: 49_874_872, 100_000_000: 99_952_399}
# The best runs the released checkpoints hold (U = 100M): AR 140M x 50 epochs (global_step 9532),
# diffusion 425M x 500 epochs (global_step 95322); the page lists what each figure is held against.
BEST_AT_100M = {"ar": ("140M", 50.0), "mdm": ("425M", 500.0)}
EPOCHS = [1.0, 2.0, 4.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 800.0]
SIZES = ["7M", "14M", "20M", "44M", "90M", "140M", "217M", "425M", "724M", "1143M", "2298M"]

AXES: dict[str, dict[str, Any]] = {
    "test": dict(corpus="", tokenizer="", objectives=["ar", "mdm"], sizes=["7M"], unique=[4_096],
                 epochs=[1.0, 2.0], seeds=[0], max_flops=0.0),
    "cluster": dict(corpus=c4.AXES["cluster"]["corpus"], tokenizer=c4.AXES["cluster"]["tokenizer"],
                    objectives=["ar", "mdm"], sizes=SIZES, unique=list(SUBSET_TOKENS), epochs=EPOCHS,
                    seeds=[0], max_flops=1.5e20),
}
RECIPE: dict[str, Any] = {  # theirs, both families, every scale
    "optim.lr": 2e-4, "optim.schedule": "cosine", "optim.min_lr_ratio": 0.1, "optim.warmup_frac": 0.01,
    "optim.weight_decay": 0.1, "optim.b1": 0.9, "optim.b2": 0.95, "optim.eps": 1e-8, "optim.grad_clip": 1.0,
    "model.tie_embeddings": True,
}
SCALE: dict[str, dict[str, Any]] = {
    "test": {"batch_size": 8, "eval.mc_samples": 2},
    # 32 samples per sequence at every evaluation, on 256 validation sequences at 10 log-spaced points
    # (dense early, and the last): 32 x 256 forward passes per evaluation, so a 1-epoch run at U = 25M
    # (47 steps of 256) is not mostly evaluation. Their runs scored 32 samples once, at the end.
    "cluster": {"batch_size": 256, "eval.mc_samples": 32, "eval.num_sequences": 256, "eval.batch_size": 64,
                "eval.schedule": "log", "eval.log_points": 10},
}


def shape(name: str) -> dict[str, int]:
  """Our model fields for one of their names: d_model, n_layers, d_model / kv_size heads, their d_ff."""
  if name not in SHAPES:
    raise grid.UserError(f"unknown Prabhudesai size {name!r}; choose from {', '.join(SHAPES)}")
  d, _, kv, _, layers = SHAPES[name]
  return {"d_model": d, "n_layers": layers, "n_heads": d // kv, "d_ff": (8 * d // 3) // 64 * 64}


def their_params(name: str, vocab: int = GPT2_VOCAB) -> int:
  """N as their scripts count it (embedding included once): what C = 6 N D uses in the paper."""
  s = shape(name)
  d, layers, f = s["d_model"], s["n_layers"], s["d_ff"]
  return 4 * layers * d * d + 3 * layers * d * f + 6 * layers * d + vocab * d


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg, default="cluster")
  if scale not in AXES:
    raise grid.UserError(f"configs/prabhudesai.py has scales {', '.join(AXES)}, not {scale!r}")
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  for name in opts["sizes"]:
    shape(name)
  if not opts["corpus"] or not opts["tokenizer"]:
    raise grid.UserError("configs/prabhudesai.py needs corpus=PATH_OR_GLOB and tokenizer=TOKENIZER_JSON "
                         "(e.g. scale=test,corpus=/data/c4.json.gz,tokenizer=/data/tokenizer.json)")
  return opts


def _point(obj: str, size: str, u: int, e: float, seed: int, scale: str) -> dict[str, Any]:
  s = grid.SCALES[scale]
  batch, seq = SCALE[scale]["batch_size"], s["data.seq_len"]
  return {"objective": obj, "model_size": "custom", **{f"model.{k}": v for k, v in shape(size).items()},
          "unique_tokens": int(u), "epochs": float(e), "seed": int(seed), **RECIPE, **SCALE[scale],
          "eval.every_steps": grid.eval_every(u, e, batch, seq, grid.EVALS_PER_RUN[scale]),
          "run_name": f"{obj}-p{size}-u{grid.human(u)}-e{grid.human(e)}-seed{seed}"}


def flops_6nd(size: str, unique: int, epochs: float) -> float:
  """6 N D in the paper's convention (N with the embedding)."""
  return 6.0 * their_params(size) * unique * epochs


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  data = c4.data_overrides(o)
  points = []
  for seed, u, e, size, obj in itertools.product(o["seeds"], o["unique"], o["epochs"], o["sizes"], o["objectives"]):
    if o["max_flops"] and flops_6nd(size, u, e) > o["max_flops"]:
      continue
    points.append({**data, **_point(obj, size, u, e, seed, o["scale"])})
  if not points:
    raise grid.UserError(f"configs/prabhudesai.py: max_flops={o['max_flops']:g} leaves no point")
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  config = grid.apply_overrides(grid.scale_config(o["scale"]), c4.data_overrides(o))
  return grid.apply_overrides(config, sweep(arg)[0])
