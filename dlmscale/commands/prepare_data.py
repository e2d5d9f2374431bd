"""`python -m dlmscale.data`: prepares data on its own and prints what was prepared.

  python -m dlmscale.data --corpus=python-stdlib --vocab_size=2048 --seq_len=256 [--out_dir=DIR]

One flag per `DataConfig` field (its default and help), so the flags and the run config's `data.*`
keys never drift apart.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from dlmscale.commands import guard
from dlmscale.data import corpus as corpus_lib, pipeline
from dlmscale.data.config import DataConfig


def define_flags() -> flags.FlagValues:
  """One flag per DataConfig field, plus --out_dir, in a private registry."""
  fv = flags.FlagValues()
  flags.DEFINE_string("out_dir", "", "write the prepared data exactly here (default: a cache directory)",
                      flag_values=fv)
  define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "str": flags.DEFINE_string}
  for f in dataclasses.fields(DataConfig):
    if f.name == "format":
      flags.DEFINE_enum(f.name, f.default, list(corpus_lib.FORMATS), f.metadata["help"], flag_values=fv)
    elif f.name != "label_noise":  # applied to training batches, not to prepared data
      define[f.type](f.name, f.default, f.metadata["help"], flag_values=fv)
  return fv


def main(argv: list[str]) -> int:
  fv = define_flags()
  guard.parse_absl(fv, argv)
  cfg = DataConfig.of({k.name: fv[k.name].value for k in dataclasses.fields(DataConfig) if k.name in fv})
  print(pipeline.summary(pipeline.prepare(cfg, out_dir=fv.out_dir or None)))
  return 0


if __name__ == "__main__":
  sys.exit(guard.guard(lambda: main(sys.argv), "dlmscale.data"))
