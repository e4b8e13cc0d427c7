"""The T5 encoder-decoder in Flax Linen, with T5X's parameter tree.

`T5(config)` is called like T5X's `Transformer`:

    logits = T5(config).apply({"params": params}, encoder_input_tokens,
                              decoder_input_tokens, decoder_target_tokens=None)

Token 0 is padding in the encoder inputs. The model knows no tuning method; it offers
two seams, each an optional module whose parameters live beside T5X's tree (which
stays exactly T5X's):

- `encoder_prompt`, the input-embedding seam: a module mapping `(embedded [batch,
  length, embed], mask [batch, length], tokens, task_ids, embedding [vocab, embed])`
  to a new `(embedded, mask)`, called between the token embedding and the encoder.
- `kv_prefixes`, the key/value prefix seam: a module called as `(kind, task_ids)`,
  `kind` one of `KV_PREFIX_KINDS` (`encoder` self-attention, `decoder` self-attention,
  `cross` attention), returning `None` or one `(key, value)` pair per layer of that
  stack, each `[batch or 1, p, heads, head_dim]`. Every query of that attention also
  attends to the prefix: always visible, zero position bias (see
  `layers.MultiHeadAttention`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import layers, losses
from prompt_tuning.models.config import T5Config

Array = jax.Array
KV_PREFIX_KINDS = ("encoder", "decoder", "cross")
# The top-level parameter trees of T5 itself; anything beside them belongs to a seam.
T5_PARAM_TREES = ("token_embedder", "encoder", "decoder")
Prefixes = Optional[Sequence[tuple[Array, Array]]]


def _mlp_sublayer(cfg: T5Config, x: Array, deterministic: bool, drop) -> Array:
  """`x + dropout(mlp(norm(x)))`, the last sublayer of both stacks (inside a compact call)."""
  dtype = cfg.activation_dtype
  y = layers.RMSNorm(cfg.layer_norm_epsilon, dtype, name="pre_mlp_layer_norm")(x)
  y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, dtype,
                      name="mlp")(y, deterministic)
  return layers.constrain(x + drop(y), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool,
               prefix: Optional[tuple[Array, Array]] = None) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    drop = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, dtype, name="pre_attention_layer_norm")(x)
    y = layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dtype,
                                  cfg.float32_attention_logits, name="attention")(
                                      y, y, bias, deterministic, prefix=prefix)
    x = x + drop(y)
    return _mlp_sublayer(cfg, x, deterministic, drop)


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               deterministic: bool, decode: bool = False,
               decode_position: Optional[Array] = None,
               self_prefix: Optional[tuple[Array, Array]] = None,
               cross_prefix: Optional[tuple[Array, Array]] = None) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    drop = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic)
    attention = lambda name, cross: layers.MultiHeadAttention(
        cfg.num_heads, cfg.head_dim, cfg.dropout_rate, dtype, cfg.float32_attention_logits,
        is_cross_attention=cross, name=name)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, dtype, name="pre_self_attention_layer_norm")(x)
    y = attention("self_attention", False)(y, y, self_bias, deterministic, decode,
                                           decode_position, self_prefix)
    x = x + drop(y)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, dtype, name="pre_cross_attention_layer_norm")(x)
    y = attention("encoder_decoder_attention", True)(y, encoded, cross_bias, deterministic,
                                                     decode, decode_position, cross_prefix)
    x = x + drop(y)
    return _mlp_sublayer(cfg, x, deterministic, drop)


def _per_layer(prefixes: Prefixes, num_layers: int, kind: str) -> list:
  """One `(key, value)` or None per layer; a wrong count is a clear error."""
  if prefixes is None:
    return [None] * num_layers
  prefixes = list(prefixes)
  if len(prefixes) != num_layers:
    raise ValueError(f"{len(prefixes)} {kind} key/value prefixes for a stack of {num_layers} "
                     "layers: give one (key, value) pair per layer")
  return prefixes


def _maybe_remat(cls, config: T5Config, static_argnums):
  return nn.remat(cls, static_argnums=static_argnums) if config.remat else cls


class Encoder(nn.Module):
  """`[batch, length, embed]` embeddings and `[batch, length]` mask → encoded states.

  With `segment_ids` (packed rows) a position attends only within its own example.
  """
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               segment_ids: Optional[Array] = None, prefixes: Prefixes = None) -> Array:
    cfg = self.config
    length = x.shape[1]
    prefixes = _per_layer(prefixes, cfg.num_encoder_layers, "encoder")
    positions = jnp.arange(length)
    relpos = layers.RelativePositionBiases(cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance, cfg.num_heads,
                                           jnp.float32, name="relpos_bias")
    bias = relpos(positions, positions, bidirectional=True)
    bias = bias + layers.attention_bias_from_masks(mask, mask)
    if segment_ids is not None:
      bias = bias + layers.attention_bias_from_segments(segment_ids, segment_ids)
    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)
    layer_cls = _maybe_remat(EncoderLayer, cfg, static_argnums=(3,))
    for i in range(cfg.num_encoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, bias, deterministic, prefixes[i])
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)


class Decoder(nn.Module):
  """Decoder stack and output layer: `[batch, length, embed]` → `[batch, length, vocab]`.

  With segment ids (packed rows) a target position attends only to its own example's
  earlier targets and its own example's inputs.
  """
  config: T5Config
  shared_embedding: Optional[layers.Embed] = None

  @nn.compact
  def __call__(self, x: Array, encoded: Array, encoder_mask: Array,
               decoder_mask: Optional[Array], deterministic: bool,
               decode: bool = False, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None, self_prefixes: Prefixes = None,
               cross_prefixes: Prefixes = None) -> Array:
    cfg = self.config
    batch, length = x.shape[:2]
    self_prefixes = _per_layer(self_prefixes, cfg.num_decoder_layers, "decoder")
    cross_prefixes = _per_layer(cross_prefixes, cfg.num_decoder_layers, "cross")
    packed = encoder_segment_ids is not None or decoder_segment_ids is not None
    if packed and (encoder_segment_ids is None or decoder_segment_ids is None):
      raise ValueError("packed rows need both encoder_segment_ids and decoder_segment_ids")
    if packed and decode:
      raise ValueError("decoding with a cache reads one example per row; segment ids "
                       "(packed rows) are for teacher-forced training")
    relpos = layers.RelativePositionBiases(cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance, cfg.num_heads,
                                           jnp.float32, name="relpos_bias")
    decode_position = None
    if decode and self.has_variable("cache", "position"):
      # A decoding step: one new token per row at `position`, keys over the whole cache.
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      decode_position = position.value
      cache_length = self.get_variable("cache", "length_marker").shape[0]
      key_positions = jnp.arange(cache_length)
      query_positions = decode_position + jnp.arange(length)
      self_bias = relpos(query_positions, key_positions, bidirectional=False)
      visible = key_positions[None, :] <= query_positions[:, None]
      self_bias = self_bias + jnp.where(visible, 0.0, -1e10)[None, None]
      position.value = decode_position + length
    else:
      if decode:  # The call that creates the cache: remember its length.
        self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        self.variable("cache", "length_marker", lambda: jnp.zeros((length,), jnp.int8))
      positions = jnp.arange(length)
      self_bias = relpos(positions, positions, bidirectional=False) + layers.causal_bias(length)
      if decoder_mask is not None:
        self_bias = self_bias + layers.attention_bias_from_masks(decoder_mask, decoder_mask)
    query_mask = jnp.ones((batch, length), bool) if decoder_mask is None else decoder_mask
    cross_bias = layers.attention_bias_from_masks(query_mask, encoder_mask)
    if packed:
      self_bias = self_bias + layers.attention_bias_from_segments(decoder_segment_ids,
                                                                  decoder_segment_ids)
      cross_bias = cross_bias + layers.attention_bias_from_segments(decoder_segment_ids,
                                                                    encoder_segment_ids)

    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)
    layer_cls = _maybe_remat(DecoderLayer, cfg, static_argnums=(5, 6))
    for i in range(cfg.num_decoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, encoded, self_bias, cross_bias, deterministic,
                                             decode, decode_position, self_prefixes[i],
                                             cross_prefixes[i])
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="decoder_norm")(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)
    if cfg.logits_via_embedding:
      # T5 1.0 ties the output layer to the embedding and rescales by emb_dim**-0.5.
      logits = self.shared_embedding.attend(x) * (cfg.emb_dim ** -0.5)
    else:
      logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"),
                            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                            cfg.activation_dtype, name="logits_dense")(x)
    return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class T5(nn.Module):
  """An encoder-decoder T5 with T5X's parameter tree and optional seams (`encoder_prompt`,
  `kv_prefixes`)."""
  config: T5Config
  encoder_prompt: Optional[nn.Module] = None
  kv_prefixes: Optional[nn.Module] = None

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg, shared_embedding=self.token_embedder)

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False,
             task_ids: Optional[Array] = None,
             encoder_segment_ids: Optional[Array] = None) -> tuple[Array, Array]:
    """`[batch, length]` tokens → (`[batch, length', embed]` states, `[batch, length']` mask).

    `length'` is `length` plus whatever `encoder_prompt` adds; the mask is what the
    decoder's cross-attention must see. `encoder_segment_ids` (packed rows, seqio's
    `pack=True`) keep each example's attention inside the example.
    """
    self._check_unpacked(encoder_segment_ids)
    x, mask = self.prompted_inputs(encoder_input_tokens, task_ids)
    prefixes = self.prefixes("encoder", task_ids)
    return self.encoder(x, mask, not enable_dropout, encoder_segment_ids, prefixes), mask

  def _check_unpacked(self, segment_ids: Optional[Array]) -> None:
    if segment_ids is not None and (self.encoder_prompt or self.kv_prefixes) is not None:
      raise ValueError("a prompted model reads one example per row: packed rows (segment "
                       "ids) would share one prompt between examples; train with pack=False")

  def prefixes(self, kind: str, task_ids: Optional[Array] = None) -> Prefixes:
    """The `kv_prefixes` seam's `(key, value)` per layer for attention `kind`, or None."""
    if kind not in KV_PREFIX_KINDS:
      raise ValueError(f"unknown attention kind {kind!r}; choose one of {KV_PREFIX_KINDS}")
    return None if self.kv_prefixes is None else self.kv_prefixes(kind, task_ids)

  def all_prefixes(self, task_ids: Optional[Array] = None) -> dict[str, Prefixes]:
    """`{kind: prefixes}` for every kind: what `init` of the seam's parameters runs."""
    return {kind: self.prefixes(kind, task_ids) for kind in KV_PREFIX_KINDS}

  def prompted_inputs(self, encoder_input_tokens: Array,
                      task_ids: Optional[Array] = None) -> tuple[Array, Array]:
    """The encoder's input embeddings and mask, after `encoder_prompt` if there is one."""
    if encoder_input_tokens.ndim != 2:
      raise ValueError("encoder_input_tokens must be [batch, length], got shape "
                       f"{encoder_input_tokens.shape}")
    mask = encoder_input_tokens > 0
    x = self.token_embedder(encoder_input_tokens)
    if self.encoder_prompt is not None:
      x, mask = self.encoder_prompt(x, mask, encoder_input_tokens, task_ids,
                                    self.token_embedder.embedding)
    return x, mask

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Optional[Array] = None, enable_dropout: bool = False,
             decode: bool = False, encoder_segment_ids: Optional[Array] = None,
             decoder_segment_ids: Optional[Array] = None,
             task_ids: Optional[Array] = None) -> Array:
    """Decoder logits `[batch, target_length, vocab]` (float32).

    `decode=True` reads and writes the key/value `cache` collection (see `decoding.py`).
    """
    decoder_mask = None if decoder_target_tokens is None else decoder_target_tokens > 0
    y = self.token_embedder(decoder_input_tokens)
    return self.decoder(y, encoded, encoder_mask, decoder_mask, not enable_dropout, decode,
                        encoder_segment_ids, decoder_segment_ids,
                        self.prefixes("decoder", task_ids), self.prefixes("cross", task_ids))

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None, enable_dropout: bool = False,
               task_ids: Optional[Array] = None, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None) -> Array:
    """Teacher-forced logits `[batch, target_length, vocab]`; segment ids for packed rows."""
    encoded, mask = self.encode(encoder_input_tokens, enable_dropout, task_ids,
                                encoder_segment_ids)
    return self.decode(encoded, mask, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout, encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids, task_ids=task_ids)

  def token_losses(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                   decoder_target_tokens: Array, decoder_loss_weights: Optional[Array] = None,
                   enable_dropout: bool = False, z_loss: float = 0.0,
                   label_smoothing: float = 0.0, task_ids: Optional[Array] = None
                   ) -> tuple[Array, Array, Array]:
    """Per-token (loss, z-loss, weights), each `[batch, target_length]`; 0 at padding.

    Weights default to `decoder_target_tokens > 0`.
    """
    logits = self(encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                  enable_dropout, task_ids)
    weights = (decoder_target_tokens > 0 if decoder_loss_weights is None
               else decoder_loss_weights).astype(jnp.float32)
    loss, z = losses.cross_entropy(logits, decoder_target_tokens, z_loss, label_smoothing)
    return loss * weights, z * weights, weights

  def target_log_likelihood(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                            decoder_target_tokens: Array,
                            decoder_loss_weights: Optional[Array] = None,
                            task_ids: Optional[Array] = None) -> Array:
    """log p(targets | inputs) per example, `[batch]`: the score of rank classification."""
    logits = self(encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                  False, task_ids)
    weights = (decoder_target_tokens > 0 if decoder_loss_weights is None
               else decoder_loss_weights).astype(jnp.float32)
    return losses.sequence_log_likelihood(logits, decoder_target_tokens, weights)

  def init_params(self, rng: Any, batch_size: int = 1, input_length: int = 8,
                  target_length: int = 4):
    """Random parameters (boxed with logical axes) for inputs of the given shapes."""
    enc = jnp.ones((batch_size, input_length), jnp.int32)
    dec = jnp.ones((batch_size, target_length), jnp.int32)
    return self.init(rng, enc, dec)["params"]
