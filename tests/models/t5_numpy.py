"""An independent numpy T5 forward pass with key/value prefixes, for tests.

Written from the T5 paper and Li & Liang 2021, not from `prompt_tuning.models`: every
attention may take a prefix `(key, value)`, each `[1 or batch, p, heads, head_dim]`,
that every query sees, with no position bias.
"""
import math

import numpy as np

NEG = -1e10


def _rms(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _bucket(rel, bidirectional, num_buckets, max_distance):
  """T5's bucket of `key - query` (Raffel et al. 2020, mesh_tensorflow's definition)."""
  out = np.zeros_like(rel)
  n = -rel
  if bidirectional:
    num_buckets //= 2
    out += (n < 0) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  exact = num_buckets // 2
  large = exact + (np.log(np.maximum(n, 1) / exact) / math.log(max_distance / exact)
                   * (num_buckets - exact)).astype(np.int64)
  return out + np.where(n < exact, n, np.minimum(large, num_buckets - 1))


def _relpos(table, q_len, k_len, bidirectional, cfg, q_offset=0):
  rel = np.arange(k_len)[None, :] - (np.arange(q_len)[:, None] + q_offset)
  buckets = _bucket(rel, bidirectional, cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance)
  return table[:, buckets][None]  # [1, heads, q, k]


def attention(p, x_q, x_kv, bias, prefix, heads):
  """`[b, q, e]`, `[b, k, e]`, bias `[b|1, heads, q, k]` → `[b, q, e]`."""
  b = x_q.shape[0]
  split = lambda x: x.reshape(x.shape[:2] + (heads, -1))
  q = split(x_q @ p["query"]["kernel"])
  k = split(x_kv @ p["key"]["kernel"])
  v = split(x_kv @ p["value"]["kernel"])
  if prefix is not None:
    pk, pv = (np.broadcast_to(a, (b,) + a.shape[1:]) for a in prefix)
    k, v = np.concatenate([pk, k], 1), np.concatenate([pv, v], 1)
    bias = np.concatenate([np.zeros(bias.shape[:3] + (pk.shape[1],)),
                           np.broadcast_to(bias, (b,) + bias.shape[1:])], -1)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, x_q.shape[1], -1)
  return out @ p["out"]["kernel"]


def _mlp(p, x):
  return (_gelu_tanh(x @ p["wi_0"]["kernel"]) * (x @ p["wi_1"]["kernel"])) @ p["wo"]["kernel"]


def _mask_bias(q_mask, k_mask):
  return np.where(q_mask[:, None, :, None] & k_mask[:, None, None, :], 0.0, NEG)


def forward(params, cfg, enc_tokens, dec_inputs, dec_targets, prefixes=None):
  """Teacher-forced logits `[batch, target_length, vocab]` of a gated-gelu T5.1.1.

  `prefixes`: `{kind: [(key, value) per layer]}` for kinds encoder, decoder, cross.
  """
  prefixes = prefixes or {}
  per_layer = lambda kind, n: prefixes.get(kind) or [None] * n
  emb = params["token_embedder"]["embedding"]
  heads = cfg.num_heads
  enc, dec = params["encoder"], params["decoder"]
  enc_mask = enc_tokens > 0
  x = emb[enc_tokens]
  bias = (_relpos(enc["relpos_bias"]["rel_embedding"], x.shape[1], x.shape[1], True, cfg)
          + _mask_bias(enc_mask, enc_mask))
  for i, prefix in enumerate(per_layer("encoder", cfg.num_encoder_layers)):
    layer = enc[f"layers_{i}"]
    y = _rms(x, layer["pre_attention_layer_norm"]["scale"])
    x = x + attention(layer["attention"], y, y, bias, prefix, heads)
    x = x + _mlp(layer["mlp"], _rms(x, layer["pre_mlp_layer_norm"]["scale"]))
  encoded = _rms(x, enc["encoder_norm"]["scale"])

  dec_mask = dec_targets > 0
  y = emb[dec_inputs]
  length = y.shape[1]
  causal = np.where(np.tril(np.ones((length, length), bool)), 0.0, NEG)[None, None]
  self_bias = (_relpos(dec["relpos_bias"]["rel_embedding"], length, length, False, cfg)
               + causal + _mask_bias(dec_mask, dec_mask))
  cross_bias = _mask_bias(dec_mask, enc_mask)
  for i, (sp, cp) in enumerate(zip(per_layer("decoder", cfg.num_decoder_layers),
                                   per_layer("cross", cfg.num_decoder_layers))):
    layer = dec[f"layers_{i}"]
    h = _rms(y, layer["pre_self_attention_layer_norm"]["scale"])
    y = y + attention(layer["self_attention"], h, h, self_bias, sp, heads)
    h = _rms(y, layer["pre_cross_attention_layer_norm"]["scale"])
    y = y + attention(layer["encoder_decoder_attention"], h, encoded, cross_bias, cp, heads)
    y = y + _mlp(layer["mlp"], _rms(y, layer["pre_mlp_layer_norm"]["scale"]))
  y = _rms(y, dec["decoder_norm"]["scale"])
  return y @ dec["logits_dense"]["kernel"]
