"""XLA compiler options the train and eval steps are compiled with, per backend.

On CPU, XLA hands not only matmuls but also some elementwise and reduction fusions (RMSNorm,
softmax, parts of the backward pass) to its YNNPACK library by default. Restricting YNNPACK to
matmuls (`LIBRARY_FUSION_TYPE_DOT`) leaves those to XLA's own loop fusions, which also fold away a
transposed copy per MLP backward: the d_model-256 train step is 10-17% faster on the 2-core
benchmark machine (BENCHMARKS.md, `python -m bench.train_bench --xla_options none --xla_options
auto`). The math is unchanged (one-step losses agree to float32 rounding), so these are operational
settings, not part of a run's identity. Accelerators keep XLA's defaults.

`DLMSCALE_XLA_OPTIONS` overrides the table for one process: "none" for XLA's defaults, or
"KEY=VALUE,KEY=VALUE".
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp

from dlmscale.errors import UserError

ENV = "DLMSCALE_XLA_OPTIONS"
DEFAULTS: dict[str, dict[str, str]] = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
}


def parse(text: str) -> dict[str, str]:
  """'none' / '' -> {}; 'k=v,k=v' -> {k: v}; anything else is a UserError naming the format."""
  text = text.strip()
  if text in ("", "none"):
    return {}
  pairs = [p.strip() for p in text.split(",") if p.strip()]
  bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0]]
  if bad:
    raise UserError(f"{ENV}={text!r}: expected 'none' or KEY=VALUE pairs joined by commas "
                    f"(e.g. xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT); "
                    f"bad part {bad[0]!r}")
  return dict(p.split("=", 1) for p in pairs)


def requested(backend: str) -> dict[str, str]:
  """The options asked for: the environment override if set, else this backend's defaults."""
  if ENV in os.environ:
    return parse(os.environ[ENV])
  return dict(DEFAULTS.get(backend, {}))


@functools.cache
def _rejection(items: tuple[tuple[str, str], ...]) -> str | None:
  """Why this jaxlib will not compile a trivial program with these options (an older or newer XLA
  may have renamed or dropped an experimental one), or None when it will."""
  try:
    jax.jit(lambda x: x @ x, compiler_options=dict(items))(jnp.ones((2, 2))).block_until_ready()
    return None
  except (RuntimeError, ValueError, TypeError) as e:  # XLA's ways of refusing an option; nothing
    # broader, so a stop (KeyboardInterrupt, SystemExit) or a bug is never mistaken for a refusal
    return str(e).splitlines()[0].rstrip(".")


def for_backend(backend: str | None = None) -> dict[str, str] | None:
  """What to pass as jax.jit(compiler_options=...): None for XLA's defaults, else the options.

  Options from the environment that XLA rejects are a UserError; built-in defaults it rejects fall
  back to XLA's own defaults with a warning, so a jaxlib upgrade slows a run down but never stops it.
  """
  options = requested(backend or jax.default_backend())
  why = _rejection(tuple(sorted(options.items()))) if options else None
  if why and ENV in os.environ:
    raise UserError(f"{ENV}={os.environ[ENV]!r} is rejected by XLA: {why}. Fix or unset it "
                    f"('none' compiles with XLA's defaults).")
  if why:
    logging.warning("XLA rejects the default options %s (%s); compiling with XLA's defaults",
                    options, why)
  return options if options and not why else None
