"""Text classifier: ``lookup_table`` embedding -> encoder -> pooled sentence vector -> fc classifier.

* ``encoder="mean"``: masked mean of the word embeddings (a bag of words), one hidden fc + relu, fc classes.
* ``encoder="transformer"``: learned position embeddings, embedding layer_norm, then ``num_layers`` post-LN
  encoder layers as BERT writes them (q/k/v/out projections are Paddle fc = ``mul`` + ``elementwise_add``,
  attention scores and context are ``matmul`` ops, ``softmax``, residual + ``layer_norm``, a ``gelu`` FFN), then
  the masked mean over tokens and fc classes.

Input ``ids``: int64 ``(batch, max_len)``, right-padded with ``padding_idx`` (0). Padding is handled inside the
graph without comparison ops: two frozen one-column tables looked up with the same ids give the token mask
(1 for words, 0 for padding) and the additive attention bias (0 for words, -1e4 for padding).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..graph import Model
from .builder import GraphBuilder

NEG_INF = -1e4


def _mask_tables(b: GraphBuilder, vocab_size: int, padding_idx: int) -> tuple[str, str]:
    mask = np.ones((vocab_size, 1), np.float32)
    mask[padding_idx] = 0.0
    bias = np.zeros((vocab_size, 1), np.float32)
    bias[padding_idx] = NEG_INF
    return (b.param("token_mask.w_0", mask, trainable=False), b.param("attn_bias.w_0", bias, trainable=False))


def _masked_mean(b: GraphBuilder, h: str, mask: str) -> str:
    """sum_t h[:, t] * mask[:, t] / max(sum_t mask[:, t], 1): (N, L, D), (N, L, 1) -> (N, D)."""
    total = b.reduce("reduce_sum", b.mul_elementwise(h, mask), [1])
    count = b.reduce("reduce_sum", mask, [1])
    count = b._unary("clip", count, {"min": 1.0, "max": 1e9})
    return b.div(total, count)


def _attention(b: GraphBuilder, h: str, bias4: str, num_heads: int, dropout: float) -> str:
    n, length, d = b.shape(h)
    dh = d // num_heads

    def heads(t: str) -> str:           # (N, L, D) -> (N, H, L, dh)
        return b.transpose(b.reshape(t, [0, 0, num_heads, dh]), [0, 2, 1, 3])

    q = heads(b.fc(h, d, num_col_dims=2))
    k = heads(b.fc(h, d, num_col_dims=2))
    v = heads(b.fc(h, d, num_col_dims=2))
    scores = b.scale(b.matmul(q, k, trans_y=True), 1.0 / math.sqrt(dh))
    probs = b.dropout(b.softmax(b.add(scores, bias4), axis=-1), dropout)
    ctx = b.matmul(probs, v)                                           # (N, H, L, dh)
    ctx = b.reshape(b.transpose(ctx, [0, 2, 1, 3]), [0, 0, d])
    return b.dropout(b.fc(ctx, d, num_col_dims=2), dropout)


def text_classifier(vocab_size: int, num_classes: int = 4, embed_dim: int = 64, encoder: str = "mean",
                    num_layers: int = 1, num_heads: int = 4, ffn_dim: Optional[int] = None, hidden: int = 64,
                    max_len: int = 16, dropout: float = 0.1, padding_idx: int = 0, seed: int = 0) -> Model:
    """Build the classifier; see the module docstring. ``ffn_dim`` defaults to ``2 * embed_dim``."""
    kwargs = dict(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim, encoder=encoder,
                  num_layers=num_layers, num_heads=num_heads, ffn_dim=ffn_dim, hidden=hidden, max_len=max_len,
                  dropout=dropout, padding_idx=padding_idx, seed=seed)
    if encoder not in ("mean", "transformer"):
        raise ValueError(f"encoder must be 'mean' or 'transformer', got {encoder!r}")
    b = GraphBuilder(f"text_{encoder}", seed)
    ids = b.input("ids", (None, max_len), "int64")
    mask_table, bias_table = _mask_tables(b, vocab_size, padding_idx)
    h = b.embedding(ids, vocab_size, embed_dim, padding_idx=padding_idx)
    mask = b.lookup(mask_table, ids)                                       # (N, L, 1)
    if encoder == "mean":
        h = _masked_mean(b, h, mask)
        h = b.dropout(b.fc(h, hidden, act="relu"), dropout)
    else:
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        ffn = 2 * embed_dim if ffn_dim is None else int(ffn_dim)
        pos = b.param("pos_embedding_0.w_0",
                      (b.rng.standard_normal((max_len, embed_dim), dtype=np.float32) * np.float32(0.02)))
        h = b.dropout(b.layer_norm(b.add(h, pos), begin_norm_axis=2), dropout)
        bias4 = b.reshape(b.lookup(bias_table, ids), [-1, 1, 1, max_len])  # (N, 1, 1, L)
        for _ in range(num_layers):
            h = b.layer_norm(b.add(h, _attention(b, h, bias4, num_heads, dropout)), begin_norm_axis=2)
            f = b.fc(b.fc(h, ffn, act="gelu", num_col_dims=2), embed_dim, num_col_dims=2)
            h = b.layer_norm(b.add(h, b.dropout(f, dropout)), begin_norm_axis=2)
        h = _masked_mean(b, h, mask)
    logits = b.fc(h, num_classes)
    return b.build(logits, meta={"builder": "text_classifier", "kwargs": kwargs, "task": "text_classification",
                                 "input_dtype": "int64"})
