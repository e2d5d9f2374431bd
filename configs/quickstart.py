"""The README's first job: a slice of the CPU study, end to end, in under 10 minutes on 2 CPU cores.

AR and diffusion at sizes s0.1M and s0.2M on U = 12.8k unique tokens of the default corpus: per
family and size one long run (AR 32 epochs, diffusion 512, each evaluated 32 times along the way)
and a 1-epoch run (8 runs, the study's own points), then the analysis report:

  python -m launch.local --config=configs/quickstart.py --workdir=runs/quickstart

Budget (2 idle cores, cpu_study.estimate_seconds): (0.41M + 6.55M + 2 x 0.013M tokens) x (46 + 74
CPU-seconds per M tokens) = 840 core-seconds of training + evaluations + 8 starts = ~500 s, ~8.5
minutes; the s0.2M diffusion run alone is ~490 core-seconds, so two cores finish in about that.
The report then has both families' frontiers at one budget (the crossover answer or its bound).
Of its fits, Kaplan's L(C_min) is the one two sizes can identify. The measured wall time is in
BENCHMARKS.md ("End to end: the CPU study and the quickstart"). These are the study's own points,
run one at a time on both cores instead of two at a time on one core each: a
different thread count sums in a different order, so long diffusion runs end a few hundredths of a
nat from the study's, inside the seed-to-seed spread.

One run of it (argument keys as in configs/cpu_study.py, lists joined with '+'):

  python -m dlmscale.main --config=configs/quickstart.py:objectives=mdm,epochs=16 --workdir=runs/qs-mdm
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import cpu_study, grid

DEFAULTS: dict[str, Any] = {**cpu_study.DEFAULTS, "sizes": ["s0.1M", "s0.2M"], "unique": [12_800],
                            "noise_seeds": [], "task_every": 0}  # the task would cost ~2 minutes


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  return cpu_study.points(cpu_study.options(arg, DEFAULTS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return grid.apply_overrides(cpu_study.base_config(), sweep(arg)[0])
