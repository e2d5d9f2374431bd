"""`python -m dlmscale.main` with a pause of DLMSCALE_TEST_STEP_S seconds before every training step,
so a test on a real SLURM cluster can preempt a test-scale run while it trains (one of a few
seconds would otherwise finish before `scontrol requeue` lands). The pause happens outside the
computation, so losses and parameters are bitwise those of dlmscale.main."""

from __future__ import annotations

import os
import time

from dlmscale.commands import train as main
from dlmscale.train import steps as program

_put_batch = program.put_batch


def _paused_put_batch(*args, **kwargs):
  time.sleep(float(os.environ.get("DLMSCALE_TEST_STEP_S", "0")))
  return _put_batch(*args, **kwargs)


if __name__ == "__main__":
  program.put_batch = _paused_put_batch
  main.run()
