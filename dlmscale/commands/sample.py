"""`python -m dlmscale.sample`: a continuation of a prompt from a saved run, reproducible from a seed.

  python -m dlmscale.sample --workdir=RUN --prompt="def main(" [--num_tokens=64] [--seed=0]
      [--temperature=1.0] [--top_k=0] [--top_p=1.0] [--steps=S] [--method=ancestral|confidence]

The samplers (AR and the two diffusion methods) are dlmscale/eval/sampling.py.
"""

from __future__ import annotations

import sys

import jax
from absl import flags

from dlmscale.commands import guard as cli_guard
from dlmscale.data import pipeline
from dlmscale.errors import UserError
from dlmscale.eval.sampling import METHODS, sample_ar, sample_mdm, until_eod
from dlmscale.objectives.masking import make_schedule
from dlmscale.train import open_run


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory of a trained run", flag_values=fv)
  flags.DEFINE_string("prompt", "", "text to continue", flag_values=fv)
  flags.DEFINE_integer("num_tokens", 64, "new tokens to generate", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_float("temperature", 1.0, "softmax temperature (0 = greedy)", flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0 = off)", flag_values=fv)
  flags.DEFINE_float("top_p", 1.0, "keep the smallest set with this much mass (1 = off)", flag_values=fv)
  flags.DEFINE_integer("steps", 0, "diffusion denoising steps (0 = num_tokens)", flag_values=fv)
  flags.DEFINE_string("method", "ancestral", "diffusion: ancestral | confidence", flag_values=fv)
  return fv


def _main() -> None:
  fv = cli_guard.parse_run_flags(_define_flags, sys.argv)
  if fv.method not in METHODS:
    raise UserError(f"--method={fv.method!r}: choose one of {', '.join(METHODS)}")
  run = open_run.load(fv.workdir)
  prepared, setup = run.data.prepared, run.setup
  sp, eod = pipeline.load_tokenizer(prepared), prepared.eod_id
  prompt = [eod, *sp.encode(fv.prompt)]
  common = dict(num_tokens=fv.num_tokens, max_len=setup.model_cfg.max_len, mask_id=prepared.mask_id,
                seed=fv.seed, temperature=fv.temperature, top_k=fv.top_k, top_p=fv.top_p)
  with jax.set_mesh(setup.mesh):
    if run.config.objective == "ar":
      new = sample_ar(run.params, setup.apply_fn, prompt, **common)
    else:
      schedule = make_schedule(run.config.mdm.schedule, run.config.mdm.poly_exponent)
      new = sample_mdm(run.params, setup.apply_fn, prompt, schedule=schedule, steps=fv.steps,
                       method=fv.method, **common)
  print(fv.prompt + sp.decode(until_eod(new, eod)))


def main() -> int:
  return cli_guard.cli_main(_main)


if __name__ == "__main__":
  sys.exit(main())
