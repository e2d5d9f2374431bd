"""Exporting a saved run for other tools.

  python -m dlmscale.export --workdir=RUN --out=DIR [--step=N]

writes DIR/model.safetensors (Hugging Face Llama names), the Hugging Face config, the run's tokenizer and
modeling_dlmscale.py (a numpy forward pass); see dlmscale/model/export.py. An AR export loads in
`transformers` as LlamaForCausalLM; a diffusion export runs with the module file.
"""

from __future__ import annotations

import sys

import jax
from absl import flags

from dlmscale.commands import guard as cli_guard
from dlmscale.errors import UserError
from dlmscale.model import export
from dlmscale.train import open_run


def export_run(workdir, out, step: int | None = None):
  run = open_run.load(workdir, step=step)
  params = jax.device_get(run.params)
  prepared = run.data.prepared
  return export.write(out, params, run.setup.model_cfg, eod_id=prepared.eod_id,
                      mask_id=prepared.mask_id, objective=run.config.objective,
                      tokenizer_path=prepared.tokenizer_path,
                      extra={"dlmscale_step": int(run.step), "dlmscale_run": str(run.config.run_name)})


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory of a trained run", flag_values=fv)
  flags.DEFINE_string("out", None, "export folder (created)", flag_values=fv)
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)", flag_values=fv)
  return fv


def _main() -> None:
  fv = cli_guard.parse_run_flags(_define_flags, sys.argv)
  if not fv.out:
    raise UserError("--out=DIR is required (the export folder)")
  path = export_run(fv.workdir, fv.out, fv.step)
  print(f"wrote {path}")


def main() -> int:
  return cli_guard.cli_main(_main)


if __name__ == "__main__":
  sys.exit(main())
