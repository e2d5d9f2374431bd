"""Sampling: reproducible from a seed, never the mask id, filters that keep what they promise."""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlmscale.train import checkpoint
from dlmscale.commands import sample as sample_cmd
from dlmscale.eval import sampling as sample
from dlmscale.data import pipeline
from dlmscale.model import transformer as model_lib
from dlmscale.train import steps as program
from dlmscale.errors import UserError
from dlmscale.objectives.masking import LinearSchedule
from helpers.runs import trained_run

V, MASK, L = 12, 11, 24
_TABLE = jax.random.normal(jax.random.key(0), (V, V)) * 2.0


def _toy_apply(params, tokens_BxL):
  """A bigram model that would pick <mask> above everything if allowed (its logit is +20)."""
  del params
  return _TABLE[tokens_BxL] + 20.0 * (jnp.arange(V) == MASK)


def _ar(prompt=(3, 4), seed=0, **kw):
  kw = {"num_tokens": 12, **kw}
  return sample.sample_ar(None, _toy_apply, list(prompt), max_len=L, mask_id=MASK, seed=seed, **kw)


def _mdm(prompt=(3, 4), seed=0, **kw):
  kw = {"num_tokens": 12, **kw}
  return sample.sample_mdm(None, _toy_apply, list(prompt), max_len=L, mask_id=MASK, seed=seed,
                           schedule=LinearSchedule(), **kw)


@pytest.mark.parametrize("draw", [_ar, lambda **kw: _mdm(method="ancestral", steps=5, **kw),
                                  lambda **kw: _mdm(method="confidence", steps=4, **kw)],
                         ids=["ar", "ancestral", "confidence"])
def test_reproducible_from_a_seed_and_never_the_mask(draw):
  a, b, c = draw(seed=0), draw(seed=0), draw(seed=1)
  assert a.shape == (12,) and np.array_equal(a, b) and not np.array_equal(a, c)
  for out in (a, c, draw(seed=2, top_k=3), draw(seed=3, top_p=0.5, temperature=2.0)):
    assert MASK not in out and out.min() >= 0 and out.max() < V


def test_greedy_ar_follows_the_argmax_chain_without_the_mask():
  out = _ar(temperature=0.0)
  expected, prev = [], 4
  table = np.asarray(_TABLE)
  for _ in range(12):
    prev = int(np.argmax(table[prev][:MASK]))
    expected.append(prev)
  assert list(out) == expected
  assert np.array_equal(_ar(top_k=1, seed=5), out)  # top-1 sampling is greedy whatever the seed


def test_filters_keep_the_promised_tokens():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05, 0.0]]) + 1e-30)
  keep = lambda **kw: np.isfinite(np.asarray(sample.filter_logits(  # noqa: E731
      logits, mask_id=4, temperature=1.0, **kw))[0])
  assert list(keep(top_k=2, top_p=1.0)) == [True, True, False, False, False]
  assert list(keep(top_k=0, top_p=0.75)) == [True, True, False, False, False]  # 0.5 < 0.75 <= 0.8
  assert list(keep(top_k=0, top_p=0.5)) == [True, False, False, False, False]
  assert list(keep(top_k=0, top_p=1.0)) == [True, True, True, True, False]  # mask id always out


def test_one_diffusion_step_reveals_everything():
  out = _mdm(method="ancestral", steps=1, temperature=0.0)
  assert MASK not in out
  # Greedy confidence unmasking and greedy ancestral with one step agree: argmax everywhere at once.
  assert np.array_equal(_mdm(method="confidence", steps=1, temperature=0.0), out)


def test_bad_options_are_user_errors():
  with pytest.raises(UserError, match="num_tokens"):
    _ar(num_tokens=L)
  with pytest.raises(UserError, match="top_p"):
    _ar(top_p=0.0)
  with pytest.raises(UserError, match="method"):
    _mdm(method="random")


def _library_sample(run: pathlib.Path, prompt: str, seed: int, **kw) -> str:
  """The continuation the library samplers give on the parameters read straight from the newest
  checkpoint (numpy arrays, the model rebuilt from config.json; not through dlmscale.train.open_run)."""
  config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
  prepared = pipeline.prepare(config.data)
  params = checkpoint.load_arrays(run / "checkpoints")["params"]
  mcfg = program.model_config_from(config, prepared.vocab_size)
  model = model_lib.Transformer(mcfg)
  apply_fn = lambda p, t: model.apply({"params": p}, t)  # noqa: E731
  sp = pipeline.load_tokenizer(prepared)
  ids = [prepared.eod_id, *sp.encode(prompt)]  # a prompt starts a document
  common = dict(num_tokens=8, max_len=mcfg.max_len, mask_id=prepared.mask_id, seed=seed)
  if config.objective == "ar":
    new = sample.sample_ar(params, apply_fn, ids, top_k=20, **common)
  else:
    new = sample.sample_mdm(params, apply_fn, ids, schedule=LinearSchedule(), method="confidence",
                            steps=4, **common)
  return sp.decode(sample.until_eod(new, prepared.eod_id))


def test_cli_prints_the_library_samplers_continuation(tmp_path_factory, tiny_corpus, data_cache,
                                                      monkeypatch, capsys):
  """The CLI's text is the prompt plus a non-empty continuation, reproducible from --seed, different
  for another seed, and equal to the library sampler's on the checkpoint's parameters."""
  for objective, extra in (("mdm", ["--method=confidence", "--steps=4"]), ("ar", ["--top_k=20"])):
    run = trained_run(tmp_path_factory, tiny_corpus, data_cache, objective)
    capsys.readouterr()  # training's progress lines
    outs = {}
    for seed in (3, 3, 4):
      monkeypatch.setattr(sys, "argv", ["sample", f"--workdir={run}", "--prompt=def main(",
                                        "--num_tokens=8", f"--seed={seed}", *extra])
      assert sample_cmd.main() == 0
      printed = capsys.readouterr().out
      assert printed.endswith("\n")
      out = printed[:-1]
      assert outs.setdefault(seed, out) == out, "same seed, same text"
    for seed, out in outs.items():
      assert out.startswith("def main(") and out[len("def main("):].strip(), objective
      assert out == "def main(" + _library_sample(run, "def main(", seed), objective
    assert outs[3] != outs[4], objective
  monkeypatch.setattr(sys, "argv", ["sample", f"--workdir={run}", "--num_tokens=99"])
  assert sample_cmd.main() == 2 and "num_tokens=99" in capsys.readouterr().err
