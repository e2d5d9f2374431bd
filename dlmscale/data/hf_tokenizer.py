"""A Hugging Face `tokenizer.json` (byte-level BPE as in GPT-2, Llama-3 style) behind the interface the
data package uses of a sentencepiece processor: encode, decode, eos_id, get_piece_size.

The tokenizer's own end-of-text token ends documents when it has one; otherwise one id is appended
after its P tokens. `<mask>` is always the model vocabulary's last id, and that vocabulary is padded
to a multiple of 128 (accelerator-friendly shapes): V = round_up(P + appended eod + 1, 128), and the
manifest records how many of V's ids are padding.
"""

from __future__ import annotations

import json
import os
import pathlib

from dlmscale.errors import UserError

VOCAB_MULTIPLE = 128
# Tried in order: GPT-2 and most byte-level BPEs, Llama-3, then sentencepiece-derived conversions.
END_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>")


def looks_like_json(path: pathlib.Path) -> bool:
  with open(path, "rb") as f:
    return f.read(64).lstrip().startswith(b"{")


class HFTokenizer:
  """A loaded tokenizer.json; ids above its own are the appended eod, padding and <mask>."""

  def __init__(self, path: pathlib.Path):
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top  (only its users pay for it)
    try:
      json.loads(path.read_text(encoding="utf-8"))
      self.tk = Tokenizer.from_file(str(path))
    except Exception as e:  # pylint: disable=broad-except  (tokenizers raises a bare Exception)
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      raise UserError(f"{path} is not a tokenizer: not a Hugging Face tokenizer.json ({first}); give a "
                      "tokenizer.json or a sentencepiece .model") from None
    self.tk.encode_special_tokens = True  # a document's text never turns into control tokens
    self.pieces = self.tk.get_vocab_size(with_added_tokens=True)
    if self.pieces < 2:
      raise UserError(f"{path} is not a tokenizer: it has {self.pieces} tokens")
    found = [self.tk.token_to_id(t) for t in END_TOKENS if self.tk.token_to_id(t) is not None]
    self.end_token_appended = not found
    self._eos = found[0] if found else self.pieces

  def eos_id(self) -> int:
    return self._eos

  def get_piece_size(self) -> int:
    """The tokenizer's own tokens (P), without an appended eod, padding or <mask>."""
    return self.pieces

  def model_vocab_size(self) -> int:
    used = self.pieces + int(self.end_token_appended) + 1  # + <mask>
    return -(-used // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  def padding(self) -> int:
    return self.model_vocab_size() - (self.pieces + int(self.end_token_appended) + 1)

  def encode(self, text, num_threads: int = 0):
    """Ids of one text, or of each text in a list (encoded in parallel by tokenizers' own threads)."""
    if num_threads > 0:  # tokenizers' thread pool reads this once, when it first encodes in parallel
      os.environ.setdefault("RAYON_NUM_THREADS", str(num_threads))
    if isinstance(text, str):
      return self.tk.encode(text, add_special_tokens=False).ids
    return [e.ids for e in self.tk.encode_batch_fast(list(text), add_special_tokens=False)]

  def decode(self, ids) -> str:
    return self.tk.decode([int(i) for i in ids if int(i) < self.pieces], skip_special_tokens=False)
