"""Double-descent sweeps for both objectives.

Along the size ladder (depth and width change together):
- model: every ladder size at one fixed U and E;
- epoch: one size, one U, a separate run per epoch count E.
As Nakkiran et al. (2019) define them, each clean and with data.label_noise (the share of training
tokens replaced by uniform draws, dlmscale/data/label_noise.py), which is what makes their peak visible:
- width: model-wise with only the width d_model varying (d_ff = 3 d, heads of <= 32 dims, fixed
  depth), one U, one E, one learning rate for every width (their "same training procedure");
- curve: epoch-wise from one long run per family, evaluated ~curve_evals times, with a constant
  learning rate after warmup so the curve shows training time, not the schedule's decay;
- sample: one size and one E, U stepped finely (2^(1/3) apart at cpu scale) through the range
  where that model can fit its data, so a region where more data hurts can show.

  --config=configs/doubledescent.py:scale=cpu                   model + epoch (the ladder sweeps)
  --config=configs/doubledescent.py:scale=cpu,mode=nakkiran     width + curve + sample, clean and noisy
  --config=configs/doubledescent.py:scale=cpu,mode=width,noises=0+0.1+0.2,objectives=ar

Argument keys: scale (test|cpu|cluster), mode (model|epoch|both|width|curve|sample|nakkiran|all),
objectives, seeds; ladder: model_sizes, model_unique, model_epochs, epoch_size, epoch_unique,
epoch_list; Nakkiran: noises (label-noise levels, 0 = clean), widths, width_layers, width_unique,
width_epochs, width_lr, curve_size, curve_unique, curve_epochs, curve_evals, sample_size,
sample_epochs, sample_unique (lists joined with '+'; counts accept k/M/B). Run names: width points
are OBJ-dWIDTHLDEPTH-uU-eE-seedS, curve runs end in -curve, noisy runs in -nFRACTION.
Why no CI-sized run shows a noise-only peak: docs/doubledescent.md.
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid


def _geometric(lo: float, n: int, ratio: float = 2 ** (1 / 3)) -> list[int]:
  """n token counts from lo, `ratio` apart, rounded so their names state them exactly."""
  return [grid.round_sig(lo * ratio**i, 2) for i in range(n)]


AXES: dict[str, dict[str, Any]] = {
    "test": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                 model_sizes=["s0.1M", "s0.4M"], model_unique=20_000, model_epochs=1.0,
                 epoch_size="s0.1M", epoch_unique=20_000, epoch_list=[1.0, 2.0],
                 noises=[0.0, 0.2], widths=[8, 16, 24, 32, 48, 64, 96, 128], width_layers=2,
                 width_unique=8_000, width_epochs=4.0, width_lr=3e-3,
                 curve_size="s0.1M", curve_unique=8_000, curve_epochs=8.0, curve_evals=8,
                 sample_size="s0.1M", sample_epochs=4.0, sample_unique=_geometric(4_000, 6)),
    "cpu": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                model_sizes=["s0.1M", "s0.4M", "s1M", "s3M"], model_unique=250_000, model_epochs=16.0,
                epoch_size="s0.4M", epoch_unique=250_000,
                epoch_list=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                # 100k tokens for 64 epochs (6.4M tokens a run): the wider models can memorise it.
                noises=[0.0, 0.2], widths=[16, 24, 32, 48, 64, 96, 128, 192, 256], width_layers=2,
                width_unique=100_000, width_epochs=64.0, width_lr=2e-3,
                curve_size="s0.4M", curve_unique=100_000, curve_epochs=256.0, curve_evals=100,
                sample_size="s0.4M", sample_epochs=64.0, sample_unique=_geometric(25_000, 16)),
    "cluster": dict(mode="both", objectives=["ar", "mdm"], seeds=[0],
                    model_sizes=["s10M", "s25M", "s50M", "s100M", "s250M", "s500M", "s1B"],
                    model_unique=25_000_000, model_epochs=50.0,
                    epoch_size="s100M", epoch_unique=25_000_000,
                    epoch_list=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    noises=[0.0, 0.2], widths=[128, 192, 256, 384, 512, 768, 1024, 1536, 2048],
                    width_layers=12, width_unique=25_000_000, width_epochs=50.0, width_lr=6e-4,
                    curve_size="s100M", curve_unique=25_000_000, curve_epochs=512.0, curve_evals=200,
                    sample_size="s100M", sample_epochs=50.0, sample_unique=_geometric(2_500_000, 16)),
}
MODES = ("model", "epoch", "both", "width", "curve", "sample", "nakkiran", "all")
_EXPAND = {"both": ("model", "epoch"), "nakkiran": ("width", "curve", "sample"),
           "all": ("model", "epoch", "width", "curve", "sample")}


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg)
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  if opts["mode"] not in MODES:
    raise grid.UserError(f"doubledescent mode={opts['mode']!r}; choose one of {', '.join(MODES)}")
  grid.check_sizes([*opts["model_sizes"], opts["epoch_size"], opts["curve_size"], opts["sample_size"]])
  if any(not 0.0 <= f < 1.0 for f in opts["noises"]) or not opts["noises"]:
    raise grid.UserError(f"noises={opts['noises']}: give label-noise fractions in [0, 1) joined with '+'")
  if any(w < 2 or w % 2 for w in opts["widths"]) or opts["width_layers"] < 1:
    raise grid.UserError(f"widths={opts['widths']}, width_layers={opts['width_layers']}: widths must be "
                         "even and >= 2, width_layers >= 1")
  return opts


def width_shape(width: int, layers: int) -> dict[str, int]:
  """The custom model of one width: d_ff = 3 d, the fewest heads of even size at most 32 dims (64
  from d = 256, as on the ladder), so the head count follows the width and nothing else changes."""
  most = 32 if width < 256 else 64
  heads = next(h for h in range(-(-width // most), width + 1) if width % h == 0 and (width // h) % 2 == 0)
  return {"model.d_model": width, "model.n_layers": layers, "model.n_heads": heads,
          "model.d_ff": 3 * width}


def _noisy(p: dict[str, Any], noise: float) -> dict[str, Any]:
  if not noise:
    return p
  return {**p, "data.label_noise": float(noise), "run_name": f"{p['run_name']}-n{grid.human(noise)}"}


def _width_point(obj: str, width: int, o: dict[str, Any], seed: int) -> dict[str, Any]:
  u, e, scale = o["width_unique"], o["width_epochs"], o["scale"]
  s = grid.SCALES[scale]
  steps = grid.steps_for(u, e, s["batch_size"], s["data.seq_len"])
  return {"objective": obj, "model_size": "custom", **width_shape(width, o["width_layers"]),
          "unique_tokens": int(u), "epochs": float(e), "seed": int(seed), "optim.lr": o["width_lr"],
          "eval.every_steps": max(1, steps // grid.EVALS_PER_RUN[scale]),
          "run_name": f"{obj}-d{width}L{o['width_layers']}-u{grid.human(u)}-e{grid.human(e)}-seed{seed}"}


def _curve_point(obj: str, o: dict[str, Any], seed: int) -> dict[str, Any]:
  s = grid.SCALES[o["scale"]]
  p = grid.point(obj, o["curve_size"], o["curve_unique"], o["curve_epochs"], seed, o["scale"])
  steps = grid.steps_for(o["curve_unique"], o["curve_epochs"], s["batch_size"], s["data.seq_len"])
  return {**p, "optim.schedule": "constant", "eval.every_steps": max(1, steps // o["curve_evals"]),
          "run_name": p["run_name"] + "-curve"}


def _sweep_points(kind: str, obj: str, seed: int, o: dict[str, Any]) -> list[dict[str, Any]]:
  if kind == "model":
    return [grid.point(obj, size, o["model_unique"], o["model_epochs"], seed, o["scale"])
            for size in o["model_sizes"]]
  if kind == "epoch":
    return [grid.point(obj, o["epoch_size"], o["epoch_unique"], e, seed, o["scale"]) for e in o["epoch_list"]]
  if kind == "width":
    clean = [_width_point(obj, w, o, seed) for w in o["widths"]]
  elif kind == "curve":
    clean = [_curve_point(obj, o, seed)]
  else:
    clean = [grid.point(obj, o["sample_size"], u, o["sample_epochs"], seed, o["scale"])
             for u in o["sample_unique"]]
  return [_noisy(p, f) for f in o["noises"] for p in clean]


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  kinds = _EXPAND.get(o["mode"], (o["mode"],))
  points = []
  for seed, obj in itertools.product(o["seeds"], o["objectives"]):
    for kind in kinds:
      points += _sweep_points(kind, obj, seed, o)
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  return grid.apply_overrides(grid.scale_config(o["scale"]), sweep(arg)[0])
