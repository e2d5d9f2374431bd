"""Units of the trainer: LR schedules, decay mask, mesh arithmetic, resume checks."""

from __future__ import annotations

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from dlmscale.train import optim
from dlmscale import run_dir as rundir
from dlmscale.runtime import sharding
from dlmscale.errors import UserError


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_schedules_warm_up_peak_and_end_at_the_floor(kind):
  c = base.get_config().optim
  c.schedule, c.lr, c.warmup_frac, c.min_lr_ratio = kind, 1e-3, 0.1, 0.1
  s = optim.lr_schedule(c, 1000)
  assert float(s(0)) == 0.0 and float(s(50)) == pytest.approx(5e-4, rel=1e-3)
  assert float(s(100)) == pytest.approx(1e-3, rel=1e-3)
  assert float(s(1000)) == pytest.approx(1e-4, rel=1e-3)
  if kind == "wsd":  # flat until the last 20%
    assert float(s(790)) == pytest.approx(1e-3, rel=1e-3) and float(s(900)) < 1e-3


def test_weight_decay_skips_norms_and_embeddings():
  params = {"embed": {"embedding": jnp.ones((4, 2))}, "block_0": {"norm": {"scale": jnp.ones(2)},
                                                                  "mlp": {"kernel": jnp.ones((2, 3))}}}
  mask = optim.decay_mask(params)
  assert mask == {"embed": {"embedding": False}, "block_0": {"norm": {"scale": False},
                                                             "mlp": {"kernel": True}}}


@pytest.mark.parametrize("data,fsdp,n,expected", [(-1, 1, 4, (4, 1)), (2, -1, 4, (2, 2)),
                                                  (1, 1, 1, (1, 1))])
def test_mesh_shape_fills_the_rest(data, fsdp, n, expected):
  assert sharding.mesh_shape(ml_collections.ConfigDict({"data": data, "fsdp": fsdp}), n) == expected


@pytest.mark.parametrize("data,fsdp", [(3, 1), (2, 3), (-1, -1), (0, 1)])
def test_mesh_shape_rejects_what_does_not_tile(data, fsdp):
  with pytest.raises(UserError, match="mesh"):
    sharding.mesh_shape(ml_collections.ConfigDict({"data": data, "fsdp": fsdp}), 4)


def test_config_claim_allows_operational_changes_only(tmp_path):
  c = base.get_config()
  assert rundir.claim_config(tmp_path, c) is False
  c.log_every_steps, c.mesh.data = 5, 2
  assert rundir.claim_config(tmp_path, c) is True
  c.epochs = 3.0
  with pytest.raises(UserError, match="epochs"):
    rundir.claim_config(tmp_path, c)
  assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 1.0


def test_metrics_log_drops_rows_past_the_resume_step(tmp_path):
  p = tmp_path / "metrics.jsonl"
  p.write_text("".join(json.dumps({"step": s, "split": "train", "loss": 1.0}) + "\n" for s in range(10))
               + '{"step": 10, "spl')  # a torn last line from a kill mid-write
  rundir.MetricsLog(p.parent, resume_step=6).close()
  assert [r["step"] for r in rundir.read_metrics(p.parent)] == list(range(7))
