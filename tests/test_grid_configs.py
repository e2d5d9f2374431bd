"""Every grid config at every scale: unique run names that state their point, overrides that exist
in the config schema, and command-line flags that ml_collections parses back to the same config."""

from __future__ import annotations

import itertools
import math
import pathlib
import re

import pytest
from absl import flags
from ml_collections import config_flags

from configs import cpu_study, datacons, doubledescent, grid, isoflop, lr_sweep, orders, quickstart
from dlmscale.train import steps as program
from dlmscale.model import flops
from dlmscale.model import sizes
from dlmscale.data import pipeline
from dlmscale.errors import UserError
from launch import grids

REPO_README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

FILES = {"datacons": datacons, "isoflop": isoflop, "doubledescent": doubledescent, "orders": orders}
SCALES = ["test", "cpu", "cluster"]
NAME_RE = re.compile(r"^(ar|mdm)-(s[\d.]+[MB])-u([\d.]+[kMB]?)-e([\d.]+)-seed(\d+)(?:-o(\d+))?$")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("file", FILES)
def test_sweep_names_are_unique_readable_and_configs_load(file, scale):
  module, arg = FILES[file], f"scale={scale}"
  points = module.sweep(arg)
  names = [p["run_name"] for p in points]
  assert len(points) >= 4 and len(set(names)) == len(names)
  base = module.get_config(arg)
  assert base.to_dict() == grid.apply_overrides(base, points[0]).to_dict()  # get_config = first point
  configs = []
  for p in points:
    c = grid.apply_overrides(base, p)  # raises on a key configs/base.py does not define
    m = NAME_RE.match(p["run_name"])
    assert m, p["run_name"]
    obj, size, u, e, seed, n_orders = m.groups()
    assert (c.objective, c.model_size, c.seed) == (obj, size, int(seed))
    assert c.ar.num_orders == int(n_orders or 1)
    assert grid.parse_count(u) == c.unique_tokens and float(e) == c.epochs
    assert c.optim.lr == grid.LR_BY_SIZE[size] and c.model_size in sizes.LADDER
    assert isinstance(c.epochs, float) and isinstance(c.unique_tokens, int)
    steps = c.unique_tokens * c.epochs // (c.batch_size * c.data.seq_len)
    assert steps >= 1 and 1 <= c.eval.every_steps <= steps
    configs.append(grids.config_hash(c))
  assert len(set(configs)) == len(configs)  # distinct names mean distinct runs
  assert {p["objective"] for p in points} == {"ar", "mdm"}


def _parse_with_config_flags(spec: str, overrides: dict) -> dict:
  fv = flags.FlagValues()
  argv = ["prog", f"--config={spec}", *grids.override_flags(overrides)]
  config_flags.DEFINE_config_file("config", None, "grid", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config.to_dict()


@pytest.mark.parametrize("file", FILES)
def test_override_flags_parse_back_through_ml_collections(file):
  """What the launchers put on the trainer's command line is the point, types included."""
  arg = "scale=test"
  module = FILES[file]
  base = module.get_config(arg)
  for p in module.sweep(arg)[-2:]:
    parsed = _parse_with_config_flags(f"configs/{file}.py:{arg}", p)
    assert parsed == grid.apply_overrides(base, p).to_dict()
    assert isinstance(parsed["epochs"], float) and isinstance(parsed["unique_tokens"], int)


def test_override_flags_keep_float_decimal_points():
  assert grids.override_flags({"epochs": 16.0, "unique_tokens": 1_000_000, "optim.lr": 3e-4,
                              "mdm.t_min": 1e-05, "tensorboard": False, "objective": "mdm"}) == [
      "--config.epochs=16.0", "--config.unique_tokens=1000000", "--config.optim.lr=0.0003",
      "--config.mdm.t_min=1e-05", "--config.tensorboard=false", "--config.objective=mdm"]


def test_lr_falls_with_size_across_the_whole_ladder():
  assert list(grid.LR_BY_SIZE) == list(sizes.LADDER)
  lrs = list(grid.LR_BY_SIZE.values())
  assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[0] == 3e-3 and lrs[-1] == 3e-4


def test_datacons_scales_follow_the_study_design():
  cpu = datacons.sweep("scale=cpu")
  assert {p["model_size"] for p in cpu} == {"s0.1M", "s0.4M", "s1M", "s3M"}
  assert {p["unique_tokens"] for p in cpu} == {250_000, 1_000_000}
  assert {p["epochs"] for p in cpu} == {1.0, 4.0, 16.0, 64.0}
  assert all(flops.nominal_train_flops(p["model_size"], p["unique_tokens"] * p["epochs"]) <= 2e13 for p in cpu)
  full = datacons.sweep("scale=cpu,max_flops=0")
  assert len(full) == 2 * 4 * 2 * 4 and len(cpu) < len(full)
  cluster = datacons.sweep("scale=cluster")
  assert {p["model_size"] for p in cluster} == {"s10M", "s25M", "s50M", "s100M", "s250M", "s500M", "s1B"}
  assert {p["unique_tokens"] for p in cluster} == {25_000_000, 50_000_000, 100_000_000}
  assert max(p["epochs"] for p in cluster) == 800.0
  c = datacons.get_config("scale=cluster")
  assert (c.data.seq_len, c.batch_size, c.data.vocab_size % 64) == (2048, 256, 0)
  t = datacons.get_config("scale=test")
  assert (t.model_size, t.data.seq_len, t.data.vocab_size, t.batch_size) == ("s0.1M", 64, 512, 8)


def test_datacons_argument_narrows_the_grid_to_one_run():
  arg = "scale=cpu,objectives=mdm,sizes=s1M,unique=1M,epochs=16,seeds=3,max_flops=0"
  (point,) = datacons.sweep(arg)
  assert point["run_name"] == "mdm-s1M-u1M-e16-seed3"
  c = datacons.get_config(arg)
  assert (c.objective, c.model_size, c.unique_tokens, c.epochs, c.seed) == ("mdm", "s1M", 1_000_000, 16.0, 3)


@pytest.mark.parametrize("scale", SCALES)
def test_isoflop_points_spend_their_budget_in_one_epoch(scale):
  opts = isoflop.AXES[scale]
  for p in isoflop.sweep(f"scale={scale}"):
    assert p["epochs"] == 1.0
    spent = flops.nominal_train_flops(p["model_size"], p["unique_tokens"])
    assert any(math.isclose(spent, b, rel_tol=5e-3) for b in opts["budgets"]), p["run_name"]
  per_budget = {}
  for p in isoflop.sweep(f"scale={scale}"):
    c = flops.nominal_train_flops(p["model_size"], p["unique_tokens"])
    per_budget.setdefault(round(math.log10(c), 1), set()).add(p["model_size"])
  assert max(len(s) for s in per_budget.values()) >= 2  # a profile needs several sizes per budget


def test_doubledescent_sweeps_hold_the_other_axes_fixed():
  model = doubledescent.sweep("scale=cpu,mode=model")
  assert len({(p["unique_tokens"], p["epochs"]) for p in model}) == 1 and len({p["model_size"] for p in model}) == 4
  epoch = doubledescent.sweep("scale=cpu,mode=epoch,epoch_size=s1M")
  assert {p["model_size"] for p in epoch} == {"s1M"} and len({p["epochs"] for p in epoch}) == 8
  both = doubledescent.sweep("scale=test")  # the shared point (s0.1M, 20k, 1 epoch) appears once
  assert len(both) == 2 * (2 + 2 - 1)


def test_counts_read_and_write_the_same():
  for x in (20_000, 250_000, 1_000_000, 1_670_000, 25_000_000, 6_670_000_000):
    assert grid.parse_count(grid.human(x)) == x
  assert grid.human(16.0) == "16" and grid.human(0.5) == "0.5" and grid.round_sig(1_666_667) == 1_670_000


def test_run_names_and_reports_write_counts_with_one_formatter():
  """One home (dlmscale/units.py): a run's name and the report's tables can never disagree."""
  from analysis.render import fmt
  from dlmscale import units
  assert grid.human is units.human and fmt.tok is units.human
  assert grid.run_name("ar", "s0.1M", 12_800, 32, 0) == "ar-s0.1M-u12.8k-e32-seed0"
  assert [units.human(x) for x in (25_600, 1e6, 2e9, 999, 0.25)] == ["25.6k", "1M", "2B", "999", "0.25"]


@pytest.mark.parametrize("arg,message", [
    ("scale=cpu,size=s1M", "key one of"),
    ("scale=huge", "unknown scale 'huge'"),
    ("scale=cpu,sizes=s7M", "unknown model size 's7M'"),
    ("scale=cpu,epochs=many", "does not parse"),
])
def test_bad_arguments_name_the_problem(arg, message):
  with pytest.raises(UserError, match=message):
    datacons.sweep(arg)


def test_overriding_a_missing_key_is_refused():
  with pytest.raises(UserError, match="no such config key"):
    grid.apply_overrides(datacons.get_config("scale=test"), {"optim.learning_rate": 1e-3})


# --- token orders and Nakkiran-style double descent -------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_orders_grid_varies_only_the_number_of_orders(scale):
  points = orders.sweep(f"scale={scale}")
  ar = [p for p in points if p["objective"] == "ar"]
  assert sorted(p["ar.num_orders"] for p in ar) == [1, 2, 4, 16]
  axes = {(p["model_size"], p["unique_tokens"], p["epochs"]) for p in points}
  assert len(axes) == 1 and next(iter(axes))[2] >= 4  # one size and budget, many epochs
  (mdm,) = [p for p in points if p["objective"] == "mdm"]
  assert "ar.num_orders" not in mdm  # the diffusion reference is an ordinary run
  base = orders.get_config(f"scale={scale}")
  strip = lambda p: {k: v for k, v in p.items() if k not in ("ar.num_orders", "run_name")}
  assert all(strip(p) == strip(ar[0]) for p in ar)
  assert grid.apply_overrides(base, ar[-1]).ar.num_orders == 16
  assert [p["run_name"] for p in orders.sweep("scale=cpu,orders=1+8,mdm=false")] == [
      "ar-s0.4M-u250k-e100-seed0-o1", "ar-s0.4M-u250k-e100-seed0-o8"]


def _dd(arg: str) -> list[dict]:
  return doubledescent.sweep(arg)


def _without_noise(p: dict) -> dict:
  out = {k: v for k, v in p.items() if k != "data.label_noise"}
  out["run_name"] = re.sub(r"-n[\d.]+$", "", p["run_name"])
  return out


@pytest.mark.parametrize("scale", SCALES)
def test_width_sweep_changes_only_the_width(scale):
  points = _dd(f"scale={scale},mode=width")
  base = doubledescent.get_config(f"scale={scale},mode=width")
  clean = [p for p in points if "data.label_noise" not in p]
  noisy = [p for p in points if "data.label_noise" in p]
  assert {p["objective"] for p in clean} == {p["objective"] for p in noisy} == {"ar", "mdm"}
  assert [_without_noise(p) for p in noisy] == clean  # each noisy run is a clean one plus noise
  for obj in ("ar", "mdm"):
    mine = [p for p in clean if p["objective"] == obj]
    widths = [p["model.d_model"] for p in mine]
    assert len(widths) >= 8 and widths == sorted(set(widths))
    fixed = {k for k in mine[0] if k not in ("model.d_model", "model.n_heads", "model.d_ff", "run_name")}
    assert all({k: p[k] for k in fixed} == {k: mine[0][k] for k in fixed} for p in mine)
    for p in mine:
      c = grid.apply_overrides(base, p)
      m = program.model_config_from(c, c.data.vocab_size)  # a valid shape at every width
      assert (m.d_model, m.n_layers, m.d_ff) == (p["model.d_model"], c.model.n_layers, 3 * m.d_model)
      assert m.head_dim <= 64 and c.model_size == "custom"
      assert p["run_name"] == f"{obj}-d{m.d_model}L{m.n_layers}-u{grid.human(c.unique_tokens)}-e" \
                              f"{grid.human(c.epochs)}-seed{c.seed}"


@pytest.mark.parametrize("scale", SCALES)
def test_epoch_curve_is_one_long_constant_lr_run_per_family_and_noise(scale):
  points = _dd(f"scale={scale},mode=curve")
  assert sorted((p["objective"], p.get("data.label_noise", 0.0)) for p in points) == [
      ("ar", 0.0), ("ar", 0.2), ("mdm", 0.0), ("mdm", 0.2)]
  base = doubledescent.get_config(f"scale={scale},mode=curve")
  evals = doubledescent.AXES[scale]["curve_evals"]
  for p in points:
    c = grid.apply_overrides(base, p)
    steps = grid.steps_for(c.unique_tokens, c.epochs, c.batch_size, c.data.seq_len)
    assert c.optim.schedule == "constant" and steps // c.eval.every_steps >= evals
    assert c.epochs >= 8 and p["run_name"].split("-n")[0].endswith("-curve")


@pytest.mark.parametrize("scale", SCALES)
def test_sample_sweep_steps_the_unique_budget_finely_at_one_size(scale):
  points = _dd(f"scale={scale},mode=sample")
  for obj, noise in itertools.product(("ar", "mdm"), (0.0, 0.2)):
    mine = [p for p in points if p["objective"] == obj and p.get("data.label_noise", 0.0) == noise]
    assert len({(p["model_size"], p["epochs"]) for p in mine}) == 1
    us = [p["unique_tokens"] for p in mine]
    assert len(us) >= 6 and us == sorted(set(us))
    assert max(b / a for a, b in zip(us, us[1:])) < 1.35  # fine steps: 2^(1/3) apart, rounded


def test_nakkiran_flags_parse_back_and_the_ladder_sweeps_are_unchanged():
  arg = "scale=test,mode=nakkiran"
  base = doubledescent.get_config(arg)
  points = _dd(arg)
  assert {p["run_name"] for p in points} >= {"ar-d8L2-u8k-e4-seed0-n0.2", "mdm-s0.1M-u8k-e8-seed0-curve"}
  for p in (points[0], points[9], points[-1]):  # a width point, its noisy twin's family, a sample one
    assert _parse_with_config_flags(f"configs/doubledescent.py:{arg}", p) == \
        grid.apply_overrides(base, p).to_dict()
  assert all("data.label_noise" not in p and p["model_size"] in sizes.LADDER for p in _dd("scale=cpu"))
  assert len(_dd("scale=test,mode=all")) == len(_dd("scale=test")) + len(points)


@pytest.mark.parametrize("arg,message", [
    ("scale=test,mode=widths", "mode='widths'"),
    ("scale=test,mode=width,noises=1.5", "noises="),
    ("scale=test,mode=width,widths=8+13", "widths must be even"),
    ("scale=test,sample_size=s7M", "unknown model size 's7M'"),
])
def test_bad_doubledescent_arguments_name_the_problem(arg, message):
  with pytest.raises(UserError, match=message):
    doubledescent.sweep(arg)


def test_bad_orders_argument_names_the_problem():
  with pytest.raises(UserError, match="orders="):
    orders.sweep("scale=test,orders=0+4")


# --- configs/cpu_study.py and configs/quickstart.py (no scale= argument: one fixed CPU setting) ---



def test_cpu_study_is_annealed_branches_at_two_budgets_four_sizes_with_checks_on_the_tune_set():
  points = cpu_study.sweep()
  base = cpu_study.base_config()
  mult = cpu_study.lr_multipliers()
  names = [p["run_name"] for p in points]
  assert len(set(names)) == len(names)
  assert len({grids.config_hash(grid.apply_overrides(base, p)) for p in points}) == len(points)
  claims = [p for p in points if p.get("eval.set", "val") == "val"]
  main = [p for p in claims if p["seed"] == 0]
  assert {p["unique_tokens"] for p in main} == {12_800, 51_200}
  sizes_ = sorted({p["model_size"] for p in main}, key=sizes.nominal_params)
  assert sizes_ == ["s0.1M", "s0.2M", "s0.4M", "s1M"]
  for obj, epochs in (("ar", [2.0, 4.0, 8.0, 16.0, 32.0]), ("mdm", [16.0, 32.0, 64.0, 128.0, 256.0])):
    for u, s in itertools.product((12_800, 51_200), sizes_):
      fam = [p for p in main if (p["objective"], p["model_size"], p["unique_tokens"]) == (obj, s, u)]
      trunk = [p for p in fam if not p["branch.trunk"]]
      assert len(trunk) == 1 and sorted(p["epochs"] for p in fam if p["branch.trunk"]) == epochs
      for p in fam:
        c = grid.apply_overrides(base, p)
        assert c.optim.lr == pytest.approx(grid.LR_BY_SIZE[s] * mult[obj])
        assert c.eval.set == "val" and c.eval.num_sequences == 96
        assert c.optim.warmup_steps == cpu_study.WARMUP_STEPS and c.optim.weight_decay == 0.1
  longest = max(grid.steps_for(p["unique_tokens"], p["epochs"], 16, 128) for p in points)
  assert longest >= 6000  # diffusion at 51.2k to 256 epochs
  seeds = {(p["objective"], p["seed"]) for p in claims if p["seed"] > 0}
  assert seeds == {(o, s) for o in ("ar", "mdm") for s in (1, 2)}
  tune = [grid.apply_overrides(base, p) for p in points if p.get("eval.set") == "tune"]
  for obj in ("ar", "mdm"):
    mine = [c for c in tune if c.objective == obj]
    assert {(round(c.optim.lr / (grid.LR_BY_SIZE["s0.1M"] * mult[obj]), 6), c.optim.weight_decay) for c in mine} \
        == {(0.5, 0.1), (1.0, 0.1), (2.0, 0.1), (1.0, 0.3)}
    assert {(c.model_size, c.unique_tokens) for c in mine} == {("s0.1M", 12_800)}
  assert points[0]["run_name"] == "mdm-s1M-u51.2k-trunk-seed0"  # the critical path first
  for i, p in enumerate(points):  # each trunk comes before its branches
    if p["branch.trunk"]:
      assert p["branch.trunk"] in {q["run_name"] for q in points[:i]}
  assert cpu_study.estimate_seconds(points) < 2.5 * 3600  # the bound on 2 idle cores
  c = cpu_study.get_config()
  assert (c.data.seq_len, c.data.vocab_size, c.batch_size, c.eval.mdm_estimator) == (128, 1024, 16, "time")


def test_cpu_study_data_scores_the_sweep_and_the_claims_on_64_or_more_documents_each(tmp_path):
  """The study's prepared data holds out enough documents that the tune set (the lr sweep's) and the
  val set (the claims') are disjoint and each spans >= 64 documents at eval.num_sequences."""
  c = cpu_study.base_config()
  c.data.cache_dir = str(tmp_path)
  prepared = pipeline.prepare(c.data)
  sets = {w: pipeline.eval_set(prepared, c.eval.num_sequences, w) for w in ("val", "tune")}
  assert min(s.n_documents for s in sets.values()) >= 64, {w: s.n_documents for w, s in sets.items()}
  assert not set(sets["val"].document_N) & set(sets["tune"].document_N)


def test_cpu_study_reads_each_familys_lr_from_the_choice_file(tmp_path, monkeypatch):
  path = tmp_path / "lr_choice.json"
  path.write_text('{"multipliers": {"ar": 0.5, "mdm": 2.0}}')
  monkeypatch.setattr(cpu_study, "LR_CHOICE", path)
  monkeypatch.setattr(cpu_study.lr_multipliers, "__defaults__", (path,))
  lrs = {(p["objective"], p["model_size"]): p["optim.lr"] for p in cpu_study.sweep()}
  assert lrs[("ar", "s1M")] == pytest.approx(0.5 * grid.LR_BY_SIZE["s1M"])
  assert lrs[("mdm", "s0.1M")] == pytest.approx(2.0 * grid.LR_BY_SIZE["s0.1M"])
  path.write_text("{}")
  with pytest.raises(UserError, match="lr_choice"):
    cpu_study.sweep()


def test_lr_sweep_is_the_same_sweep_for_both_families_on_the_tune_set():
  points = lr_sweep.sweep()
  base = lr_sweep.get_config()
  assert len(points) == 2 * 2 * len(lr_sweep.MULTIPLIERS) and min(lr_sweep.MULTIPLIERS) == 0.25
  assert max(lr_sweep.MULTIPLIERS) == 4.0
  seen = {}
  for p in points:
    c = grid.apply_overrides(base, p)
    assert c.eval.set == "tune" and c.data.vocab_size == cpu_study.SETTINGS["data.vocab_size"]
    mult = c.optim.lr / grid.LR_BY_SIZE[c.model_size]
    seen.setdefault(c.objective, set()).add((c.model_size, round(mult, 6)))
  assert seen["ar"] == seen["mdm"] and len({s for s, _ in seen["ar"]}) == 2


def test_quickstart_is_the_study_at_one_budget_on_trunks_and_branches():
  """Both families at U = 12.8k with the study's data, shapes and learning rates: one WSD trunk each,
  evaluated TRUNK_EVALS times, and a branch per epoch count evaluated at its end; trunks come
  first (the diffusion trunk, the longest, before all) so two slots keep the critical path busy."""
  points = quickstart.sweep()
  base = cpu_study.base_config()
  mult = cpu_study.lr_multipliers()
  trunks = [p for p in points if not p["branch.trunk"]]
  assert [p["run_name"] for p in trunks] == ["mdm-s0.1M-u12.8k-trunk-seed0", "ar-s0.1M-u12.8k-trunk-seed0"]
  assert points[:2] == trunks
  for p in points:
    c = grid.apply_overrides(base, p)
    assert (c.unique_tokens, c.batch_size, c.data.seq_len, c.data.vocab_size) == (12_800, 16, 128, 1024)
    assert c.eval.set == "val" and c.eval.num_sequences == 96
    assert c.optim.lr == pytest.approx(grid.LR_BY_SIZE["s0.1M"] * mult[c.objective])
    assert c.optim.warmup_steps == cpu_study.WARMUP_STEPS
    steps = grid.steps_for(c.unique_tokens, c.epochs, c.batch_size, c.data.seq_len)
    if p["branch.trunk"]:
      assert c.eval.every_steps == steps and c.optim.schedule == "wsd"  # its end only: the annealed point
    else:
      assert steps // c.eval.every_steps == quickstart.TRUNK_EVALS and c.optim.schedule == "constant"
  for obj in ("ar", "mdm"):
    got = sorted(p["epochs"] for p in points if p["objective"] == obj and p["branch.trunk"])
    assert got == quickstart.EPOCHS[obj]
  starts = [p["branch.start_step"] for p in points if p["branch.trunk"]]
  assert starts == sorted(starts)


def test_quickstart_one_run_spelling_from_the_readme_and_docstring():
  """The README's and the docstring's `configs/quickstart.py:objectives=mdm,epochs=16`."""
  spec = "objectives=mdm,epochs=16"
  for doc in (REPO_README.read_text(), quickstart.__doc__):
    assert f"configs/quickstart.py:{spec} --workdir=runs/qs-mdm" in doc
  c = quickstart.get_config(spec)
  assert (c.run_name, c.objective, c.epochs, c.unique_tokens) == ("mdm-s0.1M-u12.8k-e16-seed0", "mdm", 16.0, 12_800)
  fv = flags.FlagValues()
  argv = ["prog", f"--config=configs/quickstart.py:{spec}"]
  config_flags.DEFINE_config_file("config", None, "q", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.to_dict() == c.to_dict()
  with pytest.raises(UserError, match="did you mean 'objectives'"):
    quickstart.get_config("objective=mdm")  # one strict parser: the singular is refused, with a hint


def test_tracking_keys_at_their_defaults_leave_a_grid_hash_alone():
  """wandb.* and profile_steps came after grids existed: at their defaults a point hashes as before."""
  import ml_collections
  from configs import base
  c = base.get_config()
  old = c.to_dict()
  del old["wandb"], old["profile_steps"]
  assert grids.config_hash(c) == grids.config_hash(ml_collections.ConfigDict(old))
  c.wandb.project, c.profile_steps = "p", "2:3"
  assert grids.config_hash(c) != grids.config_hash(ml_collections.ConfigDict(old))
