"""model.remat=auto: the least recompute that fits, chosen from the compiler's memory analysis."""

from __future__ import annotations

import json
import types

from conftest import tiny_config
from dlmscale.aot import compiler
from dlmscale.runtime import hardware
from dlmscale.train import loop


def test_auto_picks_the_first_of_none_dots_full_that_fits(monkeypatch):
  tried = []

  def fake_attempt(config, devices):
    tried.append(config.model.remat)
    fits = config.model.remat in ("dots", "full")
    return {"status": "ok" if fits else "too_big", "peak_bytes": {"none": 9, "dots": 5, "full": 3}[config.model.remat]}

  monkeypatch.setattr(compiler, "attempt", fake_attempt)
  config = tiny_config("unused", "unused", **{"model.remat": "auto"})
  remat, row, tries = compiler.choose_remat(config, [types.SimpleNamespace(platform="tpu")])
  assert (remat, tried) == ("dots", ["none", "dots"]) and row["peak_bytes"] == 5
  assert [t["status"] for t in tries] == ["too_big", "ok"]


def test_auto_falls_back_to_full_when_nothing_fits(monkeypatch):
  monkeypatch.setattr(compiler, "attempt", lambda config, devices: {"status": "too_big"})
  config = tiny_config("unused", "unused", **{"model.remat": "auto"})
  assert compiler.choose_remat(config, [types.SimpleNamespace(platform="gpu")])[0] == "full"


def test_auto_in_the_fit_search_starts_from_the_choice():
  config = tiny_config("unused", "unused", **{"model.remat": "auto"})
  devices = [types.SimpleNamespace(platform="cpu", process_index=0)]
  notes = [note for note, _ in compiler.changes_to_try(config, devices)]
  assert not any(n.startswith("model.remat") for n in notes)


def test_auto_on_cpu_is_none_logged_and_recorded(tiny_corpus, data_cache, tmp_path, capsys):
  config = tiny_config(tiny_corpus, data_cache, **{"model.remat": "auto", "epochs": 1.0})
  loop.train_and_evaluate(config, tmp_path)
  assert "model.remat=auto -> none (CPU, nothing to fit)" in capsys.readouterr().out
  assert json.loads((tmp_path / "config.json").read_text())["model"]["remat"] == "none"


def test_the_aot_table_names_auto_and_the_memory_settings():
  from launch import aot as launch_aot
  config = tiny_config("unused", "unused", **{"model.remat": "auto", "micro_batch_size": 4, "model.loss_chunk": 8})
  key = launch_aot.shape_key(config)
  assert "remat=auto" in key and "micro=4" in key and "loss_chunk=8" in key


def test_the_allocators_limit_not_the_cards_memory_decides_a_live_fit():
  """remat=auto on a GPU node: a program must fit what JAX's allocator hands out (75% of the card by
  default), not the datasheet's HBM; abstract AOT devices have no allocator and keep the datasheet."""
  def stats(limit):
    return lambda: {"bytes_limit": limit}

  def absent():
    raise RuntimeError("no allocator on a topology device")

  live = [types.SimpleNamespace(memory_stats=stats(100 * 2**30)),
          types.SimpleNamespace(memory_stats=stats(98 * 2**30))]
  assert hardware.allocator_limit(live) == 98 * 2**30
  assert hardware.allocator_limit([types.SimpleNamespace(memory_stats=absent)]) is None
  assert hardware.allocator_limit([types.SimpleNamespace(memory_stats=lambda: None)]) is None
