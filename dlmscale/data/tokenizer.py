"""The tokenizer: sentencepiece trained on the training split only, or given by the user as a
sentencepiece .model or a Hugging Face tokenizer.json (hf_tokenizer.py).

For sentencepiece the model vocabulary is the tokenizer's P pieces plus one reserved `<mask>` id:
V = P + 1, mask_id = V - 1, and its `eos` piece separates documents when they are packed (eod_id).
A tokenizer.json's vocabulary is padded to a multiple of 128, `<mask>` still the last id.
"""

from __future__ import annotations

import io
import os
import pathlib
import random
import re
from typing import Iterable, Iterator

import sentencepiece as spm

from dlmscale.data import hf_tokenizer
from dlmscale.errors import UserError

# Byte fallback reserves 256 pieces; unk and eos (the end-of-document id) two more.
MIN_PIECES = 258
_SENTENCE_CHARS = 2048  # lines are grouped into training "sentences" of about this many characters
_TRAIN_SENTENCES = 6_000  # sentences sampled for training (~10M characters at most)
_TRAIN_OPTIONS = dict(
    model_type="bpe",
    byte_fallback=True,  # any byte sequence encodes; nothing maps to unk
    unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
    # Code and text alike: keep every character and space as written, so decode(encode(x)) == x.
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    character_coverage=0.9995,
    max_sentencepiece_length=16,
    max_sentence_length=4 * _SENTENCE_CHARS + 16,  # bytes; our sentences never exceed it
    input_sentence_size=0,  # we sample ourselves: sentencepiece's sampler differs from process to process
    shuffle_input_sentence=False,
    minloglevel=2,
)


def num_threads(num_workers: int) -> int:
  return int(num_workers) if num_workers and num_workers > 0 else (os.cpu_count() or 1)


def training_sentences(docs: Iterable[str], max_chars: int = _SENTENCE_CHARS) -> Iterator[str]:
  """Groups whole lines (newlines kept, so they can merge into pieces) into bounded sentences."""
  for doc in docs:
    buf: list[str] = []
    size = 0
    for line in doc.splitlines(keepends=True):
      while len(line) > max_chars:  # one huge line (minified data): cut it rather than lose it
        if buf:
          yield "".join(buf)
          buf, size = [], 0
        yield line[:max_chars]
        line = line[max_chars:]
      if size + len(line) > max_chars and buf:
        yield "".join(buf)
        buf, size = [], 0
      buf.append(line)
      size += len(line)
    if buf and "".join(buf).strip():
      yield "".join(buf)


def sample_sentences(sentences: Iterable[str], k: int, seed: int) -> list[str]:
  """A seeded uniform sample of k sentences (reservoir sampling, one pass), in their original order."""
  rng = random.Random(int(seed))
  kept: list[tuple[int, str]] = []
  for i, sentence in enumerate(sentences):
    if i < k:
      kept.append((i, sentence))
    else:
      j = rng.randrange(i + 1)
      if j < k:
        kept[j] = (i, sentence)
  return [sentence for _, sentence in sorted(kept)]


def train(sentences: Iterable[str], n_pieces: int, out_path: pathlib.Path, *, seed: int,
          workers: int = 0, max_sentences: int = _TRAIN_SENTENCES) -> None:
  """Trains a byte-fallback BPE model with n_pieces pieces; UserError if the corpus cannot support it.

  Trains on at most `max_sentences` sentences sampled with `seed`, so the same inputs give the same
  tokenizer (byte for byte) in any process and with any thread count.
  """
  if n_pieces < MIN_PIECES:
    raise UserError(f"vocab_size={n_pieces + 1} is too small: byte fallback, unk, eos and <mask> need at "
                    f"least {MIN_PIECES + 1} ids, plus the corpus's common characters; use 512 or more")
  spm.set_random_generator_seed(int(seed) + 1)  # sentencepiece treats 0 as "unseeded"
  model = io.BytesIO()
  sample = sample_sentences(sentences, max_sentences, seed)
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sample), model_writer=model, vocab_size=n_pieces,
                                   num_threads=num_threads(workers), **_TRAIN_OPTIONS)
  except RuntimeError as e:
    raise _vocab_error(str(e), n_pieces) from None
  out_path.write_bytes(_without_thread_count(model.getvalue()))


def _without_thread_count(model: bytes) -> bytes:
  """The model records the trainer's thread count; fix it so equal tokenizers hash equal anywhere."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model)
  proto.trainer_spec.num_threads = 1
  return proto.SerializeToString(deterministic=True)


def _vocab_error(message: str, n_pieces: int) -> UserError:
  too_high = re.search(r"Vocabulary size too high.*<= (\d+)", message)
  if too_high:
    limit = int(too_high.group(1)) + 1
    return UserError(f"vocab_size={n_pieces + 1} is too large for this training split: sentencepiece can "
                     f"build at most {limit - 1} pieces from it; use vocab_size <= {limit} "
                     f"(it includes <mask>) or a bigger corpus")
  too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
  if too_low:
    need = int(too_low.group(2)) + 1
    return UserError(f"vocab_size={n_pieces + 1} is too small: the corpus's characters alone need "
                     f"{need - 1} pieces; use vocab_size >= {need} (it includes <mask>)")
  return UserError(f"sentencepiece could not train a tokenizer: {message}")


def load(path: str | os.PathLike) -> spm.SentencePieceProcessor | hf_tokenizer.HFTokenizer:
  """Loads a sentencepiece .model or a tokenizer.json (told apart by content); UserError if it is
  missing, not a tokenizer, or (sentencepiece) has no eos piece to end documents."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f"tokenizer file {str(path)!r} does not exist; give a sentencepiece .model or a Hugging "
                    "Face tokenizer.json, or leave --tokenizer empty to train one on the training split")
  if hf_tokenizer.looks_like_json(path):
    return hf_tokenizer.HFTokenizer(path)
  sp = spm.SentencePieceProcessor()
  try:
    sp.load(str(path))
  except (OSError, RuntimeError) as e:
    first = (str(e).strip().splitlines() or ["unreadable"])[0][:200]
    raise UserError(f"{path} is not a tokenizer: not a sentencepiece model ({first}); give a sentencepiece "
                    ".model or a Hugging Face tokenizer.json") from None
  if sp.eos_id() < 0:
    raise UserError(f"tokenizer {path} has no eos piece, which marks document ends when packing; "
                    "train it with an eos_id")
  return sp


def model_vocab_size(sp) -> int:
  """V: the tokenizer's pieces plus the reserved <mask> id (a tokenizer.json's: padded, see hf_tokenizer)."""
  if isinstance(sp, hf_tokenizer.HFTokenizer):
    return sp.model_vocab_size()
  return sp.get_piece_size() + 1


def padding(sp) -> int:
  """How many of the model vocabulary's ids are padding (never produced by the tokenizer)."""
  return sp.padding() if isinstance(sp, hf_tokenizer.HFTokenizer) else 0


def file_name(sp) -> str:
  """The tokenizer's file name in a prepared directory."""
  return "tokenizer.json" if isinstance(sp, hf_tokenizer.HFTokenizer) else "tokenizer.model"


def encode(sp, docs: list[str], workers: int = 0) -> list[list[int]]:
  """Token ids of each document, encoded by the tokenizer's native threads (the GIL is released)."""
  if not docs:
    return []
  return sp.encode(docs, num_threads=num_threads(workers))
