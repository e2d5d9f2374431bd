"""The README's first job: AR and diffusion on the default corpus, minutes on a 2-core CPU.

One point: `--config=configs/quickstart.py:objective=mdm`. Both families (and the report):
`python -m launch.local --config=configs/quickstart.py --workdir=runs/quickstart`.
"""

from __future__ import annotations

import ml_collections

from configs import base


def _args(arg: str | None) -> dict[str, str]:
  pairs = [p for p in (arg or "").split(",") if p]
  return dict(p.split("=", 1) for p in pairs)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _args(arg)
  c = base.get_config()
  c.objective = args.get("objective", "ar")
  c.model_size = "s1M"
  c.data.seq_len = 128
  c.data.vocab_size = 2048
  c.batch_size = 32
  c.unique_tokens = 250_000
  c.epochs = 8.0
  c.optim.lr = 3e-3
  c.eval.every_steps = 100
  c.eval.num_sequences = 128
  c.checkpoint.every_steps = 200
  c.log_every_steps = 20
  c.run_name = f"{c.objective}-quickstart"
  return c


def sweep(arg: str | None = None) -> list[dict]:
  del arg
  return [{"objective": o, "run_name": f"{o}-quickstart"} for o in ("ar", "mdm")]
