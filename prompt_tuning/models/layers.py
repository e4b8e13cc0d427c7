"""T5 building blocks in Flax Linen, every parameter and activation named by logical axes.

Logical axis names: `batch, length, embed, mlp, heads, kv, joined_kv, vocab,
relpos_buckets`. How they map onto a device mesh is data (`train/partitioning.py`),
not code here. Kernels are stored 2-D as in T5X (`[embed, heads * kv]`), so T5X
checkpoints map one to one.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_NEG_INF = -1e10
# A key/value prefix `[batch or 1, p, heads, kv]`: shared by every row, so replicated
# over `data`, its heads split like the attention's.
PREFIX_AXES = ("prefix_batch", "prefix", "heads", "kv")


def _variance_scaling(scale: float, mode: str, distribution: str = "truncated_normal"):
  return nn.initializers.variance_scaling(scale, mode, distribution)


def with_axes(init: Callable, axes: Sequence[str]):
  return nn.with_logical_partitioning(init, tuple(axes))


def constrain(x: Array, axes: Sequence[Optional[str]]) -> Array:
  return nn.with_logical_constraint(x, tuple(axes))


def activation_fn(name: str) -> Callable[[Array], Array]:
  if name == "relu":
    return jax.nn.relu
  if name == "gelu":  # T5.1.1's gelu_new: the tanh approximation.
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "gelu_exact":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name == "silu":
    return jax.nn.silu
  if name == "linear":
    return lambda x: x
  raise ValueError(f"unknown activation {name!r}")


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no centring, no bias. `[..., embed]`."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", with_axes(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (y * scale).astype(self.dtype)


class Dense(nn.Module):
  """A bias-free dense layer whose kernel `[in, out]` carries logical axes."""
  features: int
  kernel_axes: tuple[str, str]
  kernel_init: Callable = _variance_scaling(1.0, "fan_in")
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", with_axes(self.kernel_init, self.kernel_axes),
                        (x.shape[-1], self.features), jnp.float32)
    return jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype))


class Embed(nn.Module):
  """Token embedding `[vocab, embed]`; `attend` gives the tied output logits."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding", with_axes(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, tokens: Array) -> Array:
    """`[batch, length]` int → `[batch, length, embed]`."""
    return jnp.take(self.embedding.astype(self.dtype), tokens, axis=0)

  def attend(self, x: Array) -> Array:
    """`[batch, length, embed]` → `[batch, length, vocab]`."""
    return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding.astype(self.dtype))


def relative_position_bucket(relative_position: Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """T5's bucketing of `key_pos - query_pos`: exact for small offsets, log-spaced after."""
  ret = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  val_if_large = max_exact + (
      jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
      / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """Shared relative position bias `[heads, relpos_buckets]` → `[1, heads, q, k]`."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array, bidirectional: bool) -> Array:
    rel = key_positions[None, :] - query_positions[:, None]
    buckets = relative_position_bucket(rel, bidirectional, self.num_buckets, self.max_distance)
    table = self.param(
        "rel_embedding",
        with_axes(_variance_scaling(1.0, "fan_avg", "uniform"), ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    bias = jnp.take(table, buckets, axis=1)  # [heads, q, k]
    return bias[None].astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """T5 attention: no `1/sqrt(kv)` scaling (folded into the query's initialisation).

  With `decode=True` keys and values are appended to a `cache` collection, keys as
  `[batch, heads, kv, max_length]` and values as `[batch, heads, max_length, kv]` (T5X's
  layout: the einsums read the cache as it lies, so no step re-lays out the whole
  cache); `decode_position` is the index being written, or `None` for the call that
  creates the cache. Cross-attention caches the projected encoder keys and values, in
  the same layout, on that first call instead.

  `prefix = (key, value)`, each `[batch or 1, p, heads, kv]` (with beams, `batch` rows
  may be the examples', each repeated per beam), adds `p` keys and values
  in front of the sequence's (Li & Liang 2021): always visible (no mask, causal or
  padding, hides them) and without relative position bias (zero), since a prefix is
  content, not a place in the sequence. It is never written to the cache: each step
  reads it beside the cache, so beams and cache positions are those of the tokens.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  float32_logits: bool = True
  is_cross_attention: bool = False

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Optional[Array],
               deterministic: bool = True, decode: bool = False,
               decode_position: Optional[Array] = None,
               prefix: Optional[tuple[Array, Array]] = None) -> Array:
    emb = inputs_q.shape[-1]
    joined = self.num_heads * self.head_dim
    # T5X folds attention's 1/sqrt(kv) scaling into the query's initialisation.
    fan_in = _variance_scaling(1.0, "fan_in", "normal")
    query_init = lambda *args: fan_in(*args) / np.sqrt(self.head_dim).astype(np.float32)
    projection = lambda name, init: Dense(joined, ("embed", "joined_kv"), init, self.dtype,
                                          name=name)
    split = lambda x: x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
    query = constrain(split(projection("query", query_init)(inputs_q)),
                      ("batch", "length", "heads", "kv"))
    kv_axes = ("batch", "length", "heads", "kv")
    project_kv = lambda: (constrain(split(projection("key", fan_in)(inputs_kv)), kv_axes),
                          constrain(split(projection("value", fan_in)(inputs_kv)), kv_axes))

    if decode:
      key, value = self._cached_key_value(project_kv, decode_position)
      key_dims, value_dims = "bhdk", "bhkd"
    else:
      key, value = project_kv()
      key_dims = value_dims = "bkhd"

    if self.float32_logits:
      query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    logits = jnp.einsum(f"bqhd,{key_dims}->bhqk", query, key)
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    if prefix is not None:
      prefix_key, prefix_value = self._prefix(prefix, query.shape[0])
      prefix_logits = jnp.einsum("bqhd,bphd->bhqp", query, prefix_key.astype(query.dtype))
      logits = jnp.concatenate([prefix_logits.astype(logits.dtype), logits], axis=-1)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    if not deterministic and self.dropout_rate > 0:
      weights = nn.Dropout(self.dropout_rate)(weights, deterministic=False)
    if prefix is not None:
      p = prefix_key.shape[1]
      prefix_weights, weights = weights[..., :p], weights[..., p:]
    out = jnp.einsum(f"bhqk,{value_dims}->bqhd", weights, value.astype(self.dtype))
    if prefix is not None:
      out = out + jnp.einsum("bhqp,bphd->bqhd", prefix_weights,
                             prefix_value.astype(self.dtype))
    out = out.reshape(out.shape[:2] + (joined,))
    out = constrain(out, ("batch", "length", "joined_kv"))
    return Dense(emb, ("joined_kv", "embed"), _variance_scaling(1.0, "fan_in"), self.dtype,
                 name="out")(out)

  def _prefix(self, prefix: tuple[Array, Array], batch: int) -> tuple[Array, Array]:
    """The prefix's keys and values, checked and broadcast to `[batch, p, heads, kv]`."""
    key, value = prefix
    want = (self.num_heads, self.head_dim)
    for name, x in (("key", key), ("value", value)):
      if x.ndim != 4 or tuple(x.shape[2:]) != want or batch % x.shape[0]:
        raise ValueError(f"a {name} prefix must be [batch or 1, p, {want[0]}, {want[1]}] "
                         f"([.., p, heads, head_dim]) for a batch of {batch}, got shape "
                         f"{tuple(x.shape)}")
    if key.shape[:2] != value.shape[:2]:
      raise ValueError(f"the key prefix {tuple(key.shape)} and value prefix "
                       f"{tuple(value.shape)} differ in batch or length")
    def grow(x):
      x = constrain(x, PREFIX_AXES)
      if x.shape[0] not in (1, batch):  # one per example, its rows repeated (beams)
        x = jnp.repeat(x, batch // x.shape[0], axis=0)
      return jnp.broadcast_to(x, (batch,) + x.shape[1:])
    return grow(key), grow(value)

  def _cached_key_value(self, project_kv: Callable[[], tuple[Array, Array]],
                        decode_position: Optional[Array]) -> tuple[Array, Array]:
    """Keys `[batch, heads, kv, length]` and values `[batch, heads, length, kv]` from the cache.

    Each new key and value is transposed once, when it is written.
    """
    to_cache = lambda key, value: (jnp.transpose(key, (0, 2, 3, 1)),
                                   jnp.transpose(value, (0, 2, 1, 3)))
    if self.is_cross_attention:
      # The encoder's keys and values are fixed for a whole decode: project them once.
      if decode_position is None:
        key, value = to_cache(*project_kv())
        self.variable("cache", "cross_key", lambda: key)
        self.variable("cache", "cross_value", lambda: value)
      return self.get_variable("cache", "cross_key"), self.get_variable("cache", "cross_value")
    key, value = to_cache(*project_kv())
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    if decode_position is None:  # The call that creates the cache reads its own keys.
      return key, value
    # A step: write this token's key/value at `decode_position`, read all of the cache.
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key,
                                                    (0, 0, 0, decode_position))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value,
                                                      (0, 0, decode_position, 0))
    return cached_key.value, cached_value.value


class MlpBlock(nn.Module):
  """T5's feed-forward block; several activations make it gated (T5.1.1: gelu × linear)."""
  mlp_dim: int
  activations: Sequence[str]
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    emb = x.shape[-1]
    init = _variance_scaling(1.0, "fan_in")
    hidden = None
    for i, act in enumerate(self.activations):
      name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = activation_fn(act)(Dense(self.mlp_dim, ("embed", "mlp"), init, self.dtype, name=name)(x))
      hidden = h if hidden is None else hidden * h
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return Dense(emb, ("mlp", "embed"), init, self.dtype, name="wo")(hidden)


def attention_bias_from_masks(query_mask: Array, key_mask: Array, dtype=jnp.float32) -> Array:
  """`[batch, q]`, `[batch, k]` booleans → additive bias `[batch, 1, q, k]` (0 or -1e10)."""
  allowed = jnp.logical_and(query_mask[:, None, :, None], key_mask[:, None, None, :])
  return jnp.where(allowed, 0.0, _NEG_INF).astype(dtype)


def attention_bias_from_segments(query_segments: Array, key_segments: Array,
                                 dtype=jnp.float32) -> Array:
  """Packed rows: `[batch, q]`, `[batch, k]` segment ids → `[batch, 1, q, k]` additive bias
  letting a position see only its own example (0 within a segment, -1e10 across)."""
  same = query_segments[:, None, :, None] == key_segments[:, None, None, :]
  return jnp.where(same, 0.0, _NEG_INF).astype(dtype)


def causal_bias(length: int, dtype=jnp.float32) -> Array:
  """`[1, 1, length, length]` additive bias allowing each position to see itself and the past."""
  allowed = np.tril(np.ones((length, length), dtype=bool))
  return jnp.asarray(np.where(allowed, 0.0, _NEG_INF)[None, None], dtype)
