"""DataConfig: every data setting, its default and its help text, written once.

configs/base.py builds `config.data` from it and `python -m dlmscale.data` its flags, so the library
needs no config file: `DataConfig.of(config.data)` types and checks the settings where they enter.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dlmscale.errors import UserError


def _field(default: Any, help_text: str) -> Any:
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """U unique tokens come from this corpus, split, tokenized and packed into seq_len chunks."""
  corpus: str = _field("python-stdlib", "python-stdlib; a path / directory / glob of text, .jsonl, .parquet "
                       "(.gz/.zst/.bz2/.xz compressed too) or a datasets save_to_disk directory; an fsspec "
                       "URL (gs://, s3://, https://); or hf:NAME[:CONFIG[:SPLIT]]")
  format: str = _field("auto", "input format (auto: by file name, checked against the file's bytes)")
  text_field: str = _field("text", "JSONL/Parquet/Arrow field holding the document text")
  doc_separator: str = _field("", r"text files: split documents on this (e.g. '\n\n'); '' = one per file")
  val_fraction: float = _field(0.05, "fraction of documents held out for validation")
  val_tokens: int = _field(0, "hold out at least this many validation tokens (overrides the fraction when > 0)")
  vocab_size: int = _field(2048, "model vocabulary incl. the reserved <mask> (last id); 0: from --tokenizer")
  seq_len: int = _field(256, "tokens per chunk")
  tokenizer: str = _field("", "a sentencepiece .model or a Hugging Face tokenizer.json (path or URL) to use "
                          "instead of training one")
  seed: int = _field(0, "document split, tokenizer training and budget permutation")
  label_noise: float = _field(0.0, "fraction of training tokens replaced by uniform draws (label_noise.py)")
  cache_dir: str = _field("", "cache root when no --out_dir ($DLMSCALE_CACHE, ~/.cache/dlmscale)")
  num_workers: int = _field(0, "tokenizer threads (0: all cores)")

  @classmethod
  def of(cls, settings: Any) -> DataConfig:
    """Typed and checked settings from a DataConfig, a dict or a config section (missing keys: defaults)."""
    if isinstance(settings, cls):
      return settings
    get = settings.get if hasattr(settings, "get") else lambda k, d: getattr(settings, k, d)
    values = {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
      values[f.name] = _typed(f.name, values[f.name], f.type)
    cfg = cls(**values)
    if cfg.seq_len < 2:
      raise UserError(f"seq_len={cfg.seq_len} must be at least 2")
    if cfg.seed < 0:
      raise UserError(f"data.seed={cfg.seed} must be >= 0")
    if cfg.val_tokens < 0 or not 0.0 <= cfg.val_fraction < 1.0:
      raise UserError("val_tokens must be >= 0 and val_fraction in [0, 1)")
    return cfg

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _typed(name: str, value: Any, kind: str) -> Any:
  if kind == "int":
    try:
      return int(value)
    except (TypeError, ValueError):
      raise UserError(f"data.{name}={value!r} is not an integer") from None
  return float(value) if kind == "float" else value
