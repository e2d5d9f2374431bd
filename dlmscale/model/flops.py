"""Parameter and FLOP accounting: the x-axes of every scaling plot.

Parameters. `embedding` counts the vocabulary matrices: the [V, D] input embedding, plus the [D, V]
output projection when embeddings are untied (and the [L, D] target-position table of AR token-order
augmentation, orders.py). `non_embedding` is everything else: per layer the
attention q/k/v/o kernels (4 D^2), the SwiGLU kernels (3 D F) and two RMSNorm scales (2 D), plus the
final norm (D). Scaling laws are fitted against non-embedding parameters (Kaplan et al. 2020).

FLOPs (model FLOPs, what a step must do, not what the hardware does):
- A matmul of [m, k] by [k, n] costs 2 m n k; elementwise work (norms, RoPE, SiLU, softmax,
  the loss) and the embedding lookup (a gather) count 0.
- Forward per token = 2 x (non-embedding matmul parameters, i.e. without the norm scales)
  + 2 D V for the output projection (tied or not: it is a matmul either way)
  + attention scores QK^T and the weighted sum AV: 2 D per visible key each, so 4 D L per layer
    bidirectional (diffusion), and 4 D (L + 1) / 2 causal (AR), since query i sees i + 1 keys.
- Train = 3 x forward (the backward pass does two matmuls for each forward one). Recomputation
  under remat is not counted: it is overhead, not model work.

How XLA's `compiled.cost_analysis()["flops"]` differs: it counts every op, so it adds the elementwise
work (a few percent at small D); it computes the full L x L score matrix for causal attention (the
mask is applied, not exploited), so its number matches the bidirectional count for both families;
and for the backward pass it adds the scatter-add of the embedding gradient. tests/test_flops.py
checks the agreement.
"""

from __future__ import annotations

from dlmscale.model import sizes
from dlmscale.model.transformer import ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
  """{"total", "embedding", "non_embedding"}: exact, equal to the size of Transformer's param tree."""
  D, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
  embedding = V * D * (1 if cfg.tie_embeddings else 2)
  embedding += cfg.max_len * D if cfg.target_position_embedding else 0  # a lookup table, like V x D
  per_layer = 4 * D * cfg.n_heads * cfg.head_dim + 3 * D * F + 2 * D
  non_embedding = cfg.n_layers * per_layer + D
  return {"total": embedding + non_embedding, "embedding": embedding,
          "non_embedding": non_embedding}


def forward_flops_breakdown(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
  """Forward FLOPs per token by term: dense (weight matmuls in blocks), attention, unembedding."""
  D, F, V, L = cfg.d_model, cfg.d_ff, cfg.vocab_size, seq_len
  inner = cfg.n_heads * cfg.head_dim
  dense = 2.0 * cfg.n_layers * (4 * D * inner + 3 * D * F)
  mean_keys = (L + 1) / 2 if cfg.causal else float(L)
  attention = cfg.n_layers * 4.0 * inner * mean_keys
  unembedding = 2.0 * D * V
  return {"dense": dense, "attention": attention, "unembedding": unembedding}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
  """{"forward", "train"}: model FLOPs per token at this sequence length (see module docstring)."""
  forward = sum(forward_flops_breakdown(cfg, seq_len).values())
  return {"forward": forward, "train": 3.0 * forward}


def train_flops_per_step(cfg: ModelConfig, seq_len: int, global_batch: int) -> float:
  """Model FLOPs of one optimizer step over the whole global batch."""
  return flops_per_token(cfg, seq_len)["train"] * seq_len * global_batch


def train_flops_6nd(non_embedding_params: float, tokens: float) -> float:
  """6 N D: the published laws' training compute (Kaplan et al. 2020), N non-embedding parameters."""
  return 6 * non_embedding_params * tokens


def nominal_train_flops(size: str, tokens: float, vocab_size: int = 0) -> float:
  """6 N D with N a ladder size's nominal non-embedding count (plus V x d_model when vocab_size is
  given): for sizing grids and ordering runs, not for analysis (which uses param_counts)."""
  return train_flops_6nd(sizes.nominal_params(size) + vocab_size * sizes.shape(size).d_model, tokens)
