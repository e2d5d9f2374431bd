"""Every ladder name states its non-embedding size truthfully; unknown names are user errors."""

from __future__ import annotations

import pytest

from configs import base
from dlmscale.model import flops
from dlmscale.model import sizes
from dlmscale.errors import UserError
from dlmscale.train.steps import model_config_from


@pytest.mark.parametrize("name", list(sizes.LADDER))
def test_ladder_name_matches_exact_non_embedding_count(name):
  c = base.get_config()
  c.model_size = name
  cfg = model_config_from(c, vocab_size=c.data.vocab_size)
  exact = flops.param_counts(cfg)["non_embedding"]
  assert abs(exact / sizes.nominal_params(name) - 1) < 0.15, (name, exact)


def test_ladder_is_increasing():
  counts = [flops.param_counts(model_config_from(_sized(n), 256))["non_embedding"]
            for n in sizes.LADDER]
  assert counts == sorted(counts)


def _sized(name):
  c = base.get_config()
  c.model_size = name
  return c


def test_unknown_size_is_a_user_error_listing_valid_names():
  with pytest.raises(UserError, match="s1M"):
    model_config_from(_sized("s2M"), vocab_size=256)
