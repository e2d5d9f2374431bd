"""run_config.validate: a bad run config fails once, where it enters, naming the key to fix."""

from __future__ import annotations

import pytest

from configs import base
from dlmscale.train import config_checks as run_config
from dlmscale.errors import UserError


def test_the_default_config_is_valid():
  run_config.validate(base.get_config())


@pytest.mark.parametrize("key, value, needle", [
    ("mdm.schedule", "sqrt", "mdm.schedule"),
    ("mdm.poly_exponent", 0.0, "mdm.poly_exponent"),
    ("eval.mdm_estimator", "bogus", "eval.mdm_estimator"),
    ("eval.mdm_positions", "odd", "eval.mdm_positions"),
    ("mdm.t_min", 0.0, "mdm.t_min"),
    ("eval.mc_samples", 0, "eval.mc_samples"),
])
def test_a_bad_value_names_its_key(key, value, needle):
  c = base.get_config()
  c.mdm.schedule = "poly"  # so poly_exponent is read
  c.eval.mdm_estimator = "time"
  section, leaf = key.split(".")
  c[section][leaf] = value
  with pytest.raises(UserError, match=needle.replace(".", r"\.")):
    run_config.validate(c)


def test_the_count_estimator_needs_the_linear_schedule():
  c = base.get_config()
  c.mdm.schedule, c.eval.mdm_estimator = "cosine", "count"
  with pytest.raises(UserError, match="linear"):
    run_config.validate(c)
  c.mdm.schedule = "linear"
  run_config.validate(c)
