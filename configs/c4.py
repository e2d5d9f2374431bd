"""The published study's data: C4 subsets of U = 25M / 50M / 100M tokens, GPT-2 tokenizer, seq_len 2048.

Prabhudesai et al. 2025 train on C4 (allenai/c4, English) with the GPT-2 tokenizer. Here C4's own
files are read as they ship (`c4-train.*.json.gz`, gzip JSONL with a "text" field) and the GPT-2
`tokenizer.json` is given by path (Hugging Face's `gpt2` repository, e.g. `hf download gpt2
tokenizer.json`); nothing is downloaded by the config itself. GPT-2's 50,257 tokens (its
<|endoftext|> ends documents) plus <mask> pad to V = 50,304. The three budgets are nested prefixes
of one seeded chunk order, so one prepared directory serves all three:

  python -m dlmscale.data --corpus='c4/en/c4-train.0000[0-1]-of-01024.json.gz' \
      --tokenizer=gpt2/tokenizer.json --vocab_size=0 --seq_len=2048 --val_tokens=4194304
  python -m launch.local --config=configs/c4.py --workdir=runs/c4
  python -m dlmscale.main --config=configs/c4.py:objectives=mdm,sizes=s25M,unique=25M,epochs=4 --workdir=runs/c4-one

(run from the directory holding c4/ and gpt2/, or pass corpus=... and tokenizer=... arguments).
Two C4 shards (~356k documents, ~150M GPT-2 tokens each) hold the 100M-token budget and the
held-out 4M validation tokens.

Argument keys: scale (test|cluster), corpus, tokenizer, objectives, sizes, unique, epochs, seeds
(lists joined with '+'; counts accept k/M/B). `scale=test` runs the same data path at test size on a
small local stand-in (a .json.gz JSONL and a locally built tokenizer.json, as the tests write).
"""

from __future__ import annotations

import itertools
from typing import Any

import ml_collections

from configs import grid

AXES: dict[str, dict[str, Any]] = {
    "test": dict(corpus="", tokenizer="", objectives=["ar", "mdm"], sizes=["s0.1M"], unique=[4_096],
                 epochs=[1.0, 2.0], seeds=[0]),
    "cluster": dict(corpus="c4/en/c4-train.0000[0-1]-of-01024.json.gz", tokenizer="gpt2/tokenizer.json",
                    objectives=["ar", "mdm"], sizes=["s10M", "s25M", "s50M", "s100M"],
                    unique=[25_000_000, 50_000_000, 100_000_000], epochs=[1.0, 4.0, 16.0, 64.0], seeds=[0]),
}
DATA: dict[str, dict[str, Any]] = {
    "test": {"data.seq_len": 64, "data.val_tokens": 4_096},
    "cluster": {"data.seq_len": 2048, "data.val_tokens": 4_194_304},  # 2,048 validation sequences
}


def _options(arg: str | None) -> dict[str, Any]:
  scale = grid.scale_of(arg, default="cluster")
  if scale not in AXES:
    raise grid.UserError(f"configs/c4.py has scales {', '.join(AXES)}, not {scale!r}")
  opts = grid.parse_arg(arg, {"scale": scale, **AXES[scale]})
  grid.check_sizes(opts["sizes"])
  if not opts["corpus"] or not opts["tokenizer"]:
    raise grid.UserError("configs/c4.py needs corpus=PATH_OR_GLOB and tokenizer=TOKENIZER_JSON arguments "
                         "(e.g. configs/c4.py:scale=test,corpus=/data/c4.json.gz,tokenizer=/data/tokenizer.json)")
  return opts


def data_overrides(opts: dict[str, Any]) -> dict[str, Any]:
  """The data settings: the corpus and tokenizer given, V from the tokenizer (padded to 128)."""
  return {"data.corpus": opts["corpus"], "data.tokenizer": opts["tokenizer"], "data.vocab_size": 0,
          "data.text_field": "text", "data.format": "auto", **DATA[opts["scale"]]}


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
  o = _options(arg)
  data = data_overrides(o)
  points = []
  for seed, u, e, size, obj in itertools.product(o["seeds"], o["unique"], o["epochs"], o["sizes"], o["objectives"]):
    points.append({**data, **grid.point(obj, size, u, e, seed, o["scale"])})
  return grid.dedupe(points)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  o = _options(arg)
  config = grid.apply_overrides(grid.scale_config(o["scale"]), data_overrides(o))
  return grid.apply_overrides(config, sweep(arg)[0])
