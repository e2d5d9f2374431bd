"""A trained model as a folder other tools read: safetensors weights with Hugging Face Llama names, a
Hugging Face config, the tokenizer, and `modeling_dlmscale.py` (model/exported.py: the numpy forward pass).

The AR model is Llama-shaped (RMSNorm eps 1e-6, rotate-half RoPE with base 10000, SwiGLU, no biases,
tied embeddings), so its export is a weight mapping that `transformers` loads as `LlamaForCausalLM`.
Kernels are stored [out, in] as torch's Linear wants them: q/k/v from [D, H, K] to [H*K, D], the
output projection from [H, K, D] to [D, H*K], the MLP transposed. RoPE needs no permutation (the
project's rotate-half form is the one Llama in transformers uses). A diffusion model exports the same
weights with `"causal": false` and architecture `DlmscaleMaskedDiffusion`: run it with the module
file (bidirectional attention; no Hugging Face class has that architecture). The vocabulary includes
the reserved <mask> id (the last one, `mask_token_id`).
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import numpy as np

from dlmscale.errors import UserError
from dlmscale.model import exported
from dlmscale.model.transformer import ROPE_BASE, ModelConfig

MODULE_FILE = "modeling_dlmscale.py"
RMS_EPS = 1e-6  # transformer.RMSNorm


def hf_weights(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The Flax parameter tree as Llama-named float32 arrays, [out, in] kernels."""
  if cfg.target_position_embedding:
    raise UserError("this run has a target-position embedding (token-order augmentation); it has no "
                    "Llama counterpart, so it cannot be exported")
  f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
  D, H, K = cfg.d_model, cfg.n_heads, cfg.head_dim
  out = {"model.embed_tokens.weight": f32(params["embedding"]),
         "model.norm.weight": f32(params["final_norm"]["scale"])}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = f32(np.asarray(params["unembed"]).T)
  for i in range(cfg.n_layers):
    b, p = params[f"block_{i}"], f"model.layers.{i}."
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
      out[p + f"self_attn.{theirs}.weight"] = f32(np.asarray(b["attn"][ours]).reshape(D, H * K).T)
    out[p + "self_attn.o_proj.weight"] = f32(np.asarray(b["attn"]["out"]).reshape(H * K, D).T)
    out[p + "mlp.gate_proj.weight"] = f32(np.asarray(b["mlp"]["wi_gate"]).T)
    out[p + "mlp.up_proj.weight"] = f32(np.asarray(b["mlp"]["wi_up"]).T)
    out[p + "mlp.down_proj.weight"] = f32(np.asarray(b["mlp"]["wo"]).T)
    out[p + "input_layernorm.weight"] = f32(b["attn_norm"]["scale"])
    out[p + "post_attention_layernorm.weight"] = f32(b["mlp_norm"]["scale"])
  return out


def hf_config(cfg: ModelConfig, *, eod_id: int, mask_id: int, objective: str) -> dict[str, Any]:
  causal = objective == "ar"
  return {
      "architectures": ["LlamaForCausalLM" if causal else "DlmscaleMaskedDiffusion"],
      # not "llama" for diffusion: AutoModel must not quietly run the denoiser causally
      "model_type": "llama" if causal else "dlmscale_mdm", "causal": causal, "objective": objective,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_heads, "head_dim": cfg.head_dim,
      "max_position_embeddings": cfg.max_len, "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_BASE,
      "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
      "tie_word_embeddings": bool(cfg.tie_embeddings), "torch_dtype": "float32",
      "bos_token_id": int(eod_id), "eos_token_id": int(eod_id), "pad_token_id": int(eod_id),
      "mask_token_id": int(mask_id), "initializer_range": 0.02, "use_cache": True,
  }


def write(out_dir: str | pathlib.Path, params: dict, cfg: ModelConfig, *, eod_id: int, mask_id: int,
          objective: str, tokenizer_path: str | pathlib.Path, extra: dict | None = None
          ) -> pathlib.Path:
  """The export folder: model.safetensors, the config, the tokenizer, the module file."""
  from safetensors.numpy import save_file
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  config = {**hf_config(cfg, eod_id=eod_id, mask_id=mask_id, objective=objective), **(extra or {})}
  save_file(hf_weights(params, cfg), str(out / exported.WEIGHTS), metadata={"format": "pt"})
  (out / exported.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
  tok = pathlib.Path(tokenizer_path)
  is_json = tok.read_bytes()[:1] == b"{"
  shutil.copyfile(tok, out / ("tokenizer.json" if is_json else "tokenizer.model"))
  (out / exported.TOKENIZER_CONFIG).write_text(json.dumps({
      "tokenizer_file" if is_json else "vocab_file": "tokenizer.json" if is_json else "tokenizer.model",
      "eos_token_id": int(eod_id), "mask_token_id": int(mask_id),
      "note": "contexts start with the end-of-document id, as training documents do"}, indent=2) + "\n")
  shutil.copyfile(exported.__file__, out / MODULE_FILE)
  return out
