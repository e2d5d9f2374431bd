"""The README's first job: a small slice of the CPU study, end to end, in minutes on 2 CPU cores.

AR and diffusion, model s0.2M, U = 6.4k unique tokens of the default corpus repeated for
1, 4, 16 and 64 epochs (8 runs), then the analysis report:

  python -m launch.local --config=configs/quickstart.py --workdir=runs/quickstart

One run of it (the first point of the narrowed grid; argument keys as in configs/cpu_study.py,
lists joined with '+'):

  python -m dlmscale.main --config=configs/quickstart.py:objectives=mdm,epochs=16 --workdir=runs/qs-mdm
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import cpu_study, grid

DEFAULTS: dict[str, Any] = {**cpu_study.DEFAULTS, "sizes": ["s0.2M"], "unique": [6_400],
                            "noise_seeds": [], "long_epochs": []}


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return cpu_study.points(cpu_study.options(arg, DEFAULTS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(cpu_study.base_config(), sweep(arg)[0])
