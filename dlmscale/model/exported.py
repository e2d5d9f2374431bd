"""An exported dlmscale model, run with numpy alone: the reference forward pass of an export.

`python -m dlmscale.export` copies this file into the export folder as `modeling_dlmscale.py`, so
the folder is usable without this project:

    import modeling_dlmscale as m
    model = m.load("EXPORT_DIR")          # config.json + model.safetensors
    logits_BxLxV = model(tokens_BxL)       # float32 numpy, the project's logits within ~1e-5

The weights use the Hugging Face Llama names (model.embed_tokens, model.layers.N.self_attn.q_proj,
... , model.norm; lm_head only when embeddings are untied), and `transformers` loads an AR export as
`LlamaForCausalLM` directly. The architecture, exactly:
  - pre-norm blocks: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x)); a final rmsnorm; logits = x E^T
    (tied embeddings) or x W_lm_head^T.
  - RMSNorm: x / sqrt(mean(x^2) + 1e-6) * weight, in float32.
  - attention: multi-head (as many key/value heads as query heads), no biases, scale 1/sqrt(head_dim),
    RoPE in rotate-half form with base 10000 on positions 0..L-1, applied to q and k.
  - MLP: SwiGLU, down(silu(gate(x)) * up(x)), no biases.
  - `causal` (config.json): true for AR (position p predicts token p + 1); false for the masked
    diffusion denoiser, which is bidirectional and predicts, at every position holding
    `mask_token_id` (the last vocabulary id), the token that was masked there. It takes no time input.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

WEIGHTS, CONFIG = "model.safetensors", "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x_BxHxLxK: np.ndarray, theta: float) -> np.ndarray:
  L, K = x_BxHxLxK.shape[-2:]
  inv_freq = theta ** (-np.arange(0, K, 2, dtype=np.float32) / K)
  ang = np.arange(L, dtype=np.float32)[:, None] * inv_freq[None]
  cos, sin = np.cos(ang), np.sin(ang)
  x1, x2 = x_BxHxLxK[..., :K // 2], x_BxHxLxK[..., K // 2:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - np.max(x, axis=-1, keepdims=True))
  return e / np.sum(e, axis=-1, keepdims=True)


class Model:
  def __init__(self, config: dict, weights: dict[str, np.ndarray]):
    self.config = config
    self.w = {k: np.asarray(v, np.float32) for k, v in weights.items()}

  def attention(self, x_BxLxD: np.ndarray, i: int) -> np.ndarray:
    c, p = self.config, f"model.layers.{i}.self_attn."
    B, L, _ = x_BxLxD.shape
    H, K = c["num_attention_heads"], c["head_dim"]

    def heads(name: str) -> np.ndarray:
      return (x_BxLxD @ self.w[p + name + ".weight"].T).reshape(B, L, H, K).transpose(0, 2, 1, 3)

    q = rope(heads("q_proj"), c["rope_theta"])
    k = rope(heads("k_proj"), c["rope_theta"])
    v = heads("v_proj")
    s_BxHxLxL = q @ k.transpose(0, 1, 3, 2) / np.sqrt(K)
    if c.get("causal", True):
      s_BxHxLxL = np.where(np.tril(np.ones((L, L), bool)), s_BxHxLxL, -np.inf)
    o = (softmax(s_BxHxLxL) @ v).transpose(0, 2, 1, 3).reshape(B, L, H * K)
    return o @ self.w[p + "o_proj.weight"].T

  def mlp(self, x_BxLxD: np.ndarray, i: int) -> np.ndarray:
    p = f"model.layers.{i}.mlp."
    g = x_BxLxD @ self.w[p + "gate_proj.weight"].T
    u = x_BxLxD @ self.w[p + "up_proj.weight"].T
    return (g / (1.0 + np.exp(-g)) * u) @ self.w[p + "down_proj.weight"].T

  def __call__(self, tokens_BxL) -> np.ndarray:
    c, eps = self.config, self.config["rms_norm_eps"]
    emb = self.w["model.embed_tokens.weight"]
    x = emb[np.asarray(tokens_BxL)]
    for i in range(c["num_hidden_layers"]):
      x = x + self.attention(rms_norm(x, self.w[f"model.layers.{i}.input_layernorm.weight"], eps), i)
      x = x + self.mlp(rms_norm(x, self.w[f"model.layers.{i}.post_attention_layernorm.weight"], eps), i)
    x = rms_norm(x, self.w["model.norm.weight"], eps)
    head = emb if c.get("tie_word_embeddings", True) else self.w["lm_head.weight"]
    return (x @ head.T).astype(np.float32)


def load(directory: str | pathlib.Path) -> Model:
  from safetensors.numpy import load_file
  directory = pathlib.Path(directory)
  return Model(json.loads((directory / CONFIG).read_text()), load_file(str(directory / WEIGHTS)))
