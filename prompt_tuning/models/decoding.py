"""Autoregressive decoding with a key/value cache, compiled whole with `jax.jit`.

The encoder runs once; the decoder then takes one token per step, reading and writing
the `cache` collection of `T5.decode(..., decode=True)`. Each algorithm is a
`lax.while_loop` that stops as soon as every row has emitted EOS.

    tokens = generate(model, params, encoder_input_tokens, max_decode_length=32)
    tokens, scores = beam_search(model, params, encoder_input_tokens, 32, num_beams=4)

Outputs exclude the decoder's start token; positions after EOS are 0 (padding).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from prompt_tuning.models.network import T5

Array = jax.Array
_NEG = -1.0e9


def _model_fns(model: T5, params: Any, encoder_input_tokens: Array, max_decode_length: int,
               repeat: int, task_ids: Optional[Array]):
  """Encodes once, builds the cache and returns `(cache, step_fn)`.

  `step_fn(cache, tokens [rows]) -> (log-probabilities [rows, vocab], cache)`; rows are
  the batch repeated `repeat` times (one per beam), example-major.
  """
  variables = {"params": params}
  encoded, mask = model.apply(variables, encoder_input_tokens, task_ids=task_ids,
                              method=T5.encode)
  encoded = jnp.repeat(encoded, repeat, axis=0)
  mask = jnp.repeat(mask, repeat, axis=0)
  task_ids = None if task_ids is None else jnp.repeat(task_ids, repeat, axis=0)
  rows = encoded.shape[0]
  dummy = jnp.zeros((rows, max_decode_length), jnp.int32)
  _, state = model.apply(variables, encoded, mask, dummy, decode=True, task_ids=task_ids,
                         method=T5.decode, mutable=["cache"])

  def step(cache, tokens):
    logits, state = model.apply({"params": params, "cache": cache}, encoded, mask,
                                tokens[:, None], decode=True, task_ids=task_ids,
                                method=T5.decode, mutable=["cache"])
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)), state["cache"]

  return state["cache"], step


def _filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
  """Masks all but the `top_k` largest logits and the smallest set whose mass ≥ `top_p`."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, _NEG, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    mass_before = jnp.cumsum(jax.nn.softmax(sorted_logits), axis=-1) - jax.nn.softmax(
        sorted_logits)
    sorted_logits = jnp.where(mass_before >= top_p, _NEG, sorted_logits)
    logits = jnp.zeros_like(logits).at[
        jnp.arange(logits.shape[0])[:, None], order].set(sorted_logits)
  return logits


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "temperature",
                                             "top_k", "top_p", "eos_id", "start_id"))
def generate(model: T5, params: Any, encoder_input_tokens: Array, max_decode_length: int,
             rng: Optional[Array] = None, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int = 1, start_id: int = 0,
             task_ids: Optional[Array] = None) -> tuple[Array, Array]:
  """Greedy (`temperature=0`) or sampled decoding.

  Returns tokens `[batch, max_decode_length]` and each row's total log-probability
  `[batch]` (of the filtered, temperature-scaled distribution when sampling).
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if temperature > 0 and rng is None:
    raise ValueError("sampling (temperature > 0) needs an `rng` key")
  batch = encoder_input_tokens.shape[0]
  cache, step = _model_fns(model, params, encoder_input_tokens, max_decode_length, 1, task_ids)
  rng = jax.random.PRNGKey(0) if rng is None else rng

  def cond(state):
    i, _, _, _, finished, _, _ = state
    return (i < max_decode_length) & ~jnp.all(finished)

  def body(state):
    i, out, last, cache, finished, scores, rng = state
    logprobs, cache = step(cache, last)
    if temperature == 0:
      token = jnp.argmax(logprobs, axis=-1)
    else:
      rng, key = jax.random.split(rng)
      logprobs = jax.nn.log_softmax(_filter_logits(logprobs / temperature, top_k, top_p))
      token = jax.random.categorical(key, logprobs)
    token = jnp.where(finished, 0, token).astype(jnp.int32)
    chosen = jnp.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]
    scores = scores + jnp.where(finished, 0.0, chosen)
    out = out.at[:, i].set(token)
    return i + 1, out, token, cache, finished | (token == eos_id), scores, rng

  init = (jnp.array(0), jnp.zeros((batch, max_decode_length), jnp.int32),
          jnp.full((batch,), start_id, jnp.int32), cache, jnp.zeros((batch,), bool),
          jnp.zeros((batch,)), rng)
  _, out, _, _, _, scores, _ = jax.lax.while_loop(cond, body, init)
  return out, scores


def brevity_penalty(alpha: float, length: Array) -> Array:
  """T5X's length penalty `((5 + length) / 6) ** alpha`; alpha 0 scores by log-probability."""
  return ((5.0 + length) / 6.0) ** alpha


# Cache entries equal across one example's beams (the encoder's keys and values).
_SHARED_BY_BEAMS = ("cross_key", "cross_value")


def _gather_beams(tree: Any, beam_index: Array, batch: int, beams: int) -> Any:
  """Picks, per example, the rows `beam_index [batch, n]` of every `[batch * beams, ...]` leaf.

  Beams only move within their example, so the cross-attention caches, the same for
  every beam of an example, are left in place rather than copied every step.
  """
  flat = (jnp.arange(batch)[:, None] * beams + beam_index).reshape(-1)

  def gather(path, x):
    if x.ndim == 0 or x.shape[0] != batch * beams:
      return x
    if path and getattr(path[-1], "key", None) in _SHARED_BY_BEAMS:
      return x
    return x[flat]
  return jax.tree_util.tree_map_with_path(gather, tree)


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "num_beams",
                                             "alpha", "eos_id", "start_id"))
def beam_search(model: T5, params: Any, encoder_input_tokens: Array, max_decode_length: int,
                num_beams: int = 4, alpha: float = 0.6, eos_id: int = 1, start_id: int = 0,
                task_ids: Optional[Array] = None) -> tuple[Array, Array]:
  """Beam search with T5X's brevity penalty.

  Returns `[batch, num_beams, max_decode_length]` tokens sorted best first and their
  scores `[batch, num_beams]` (log-probability / brevity penalty). Each step ranks
  `2 * num_beams` continuations; an EOS among the best `num_beams` of them finishes a
  hypothesis, the best non-EOS ones stay live. Hypotheses still live at the maximum
  length compete with the finished ones.
  """
  if num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {num_beams}")
  batch = encoder_input_tokens.shape[0]
  k, length = num_beams, max_decode_length
  cache, step = _model_fns(model, params, encoder_input_tokens, length, k, task_ids)
  # Only the first beam is live at the start, so the first step does not pick k copies.
  live_logprobs = jnp.tile(jnp.array([0.0] + [_NEG] * (k - 1)), (batch, 1))
  max_penalty = brevity_penalty(alpha, float(length))

  def cond(state):
    i, _, live_logprobs, _, _, finished_scores = state
    # Live log-probabilities only fall, so a live beam's best possible score is bounded.
    best_live = live_logprobs[:, 0] / (max_penalty if alpha > 0 else 1.0)
    worst_finished = finished_scores[:, -1]
    return (i < length) & ~jnp.all(worst_finished >= best_live)

  def body(state):
    i, live_seqs, live_logprobs, cache, finished_seqs, finished_scores = state
    logprobs, cache = step(cache, _last_tokens(live_seqs, i, start_id).reshape(-1))
    vocab = logprobs.shape[-1]
    candidates = (live_logprobs[:, :, None] + logprobs.reshape(batch, k, vocab)).reshape(
        batch, k * vocab)
    cand_logprobs, cand_index = jax.lax.top_k(candidates, 2 * k)
    cand_beam, cand_token = cand_index // vocab, cand_index % vocab
    cand_seqs = jnp.take_along_axis(live_seqs, cand_beam[:, :, None], axis=1)
    cand_seqs = cand_seqs.at[:, :, i].set(cand_token)
    is_eos = cand_token == eos_id

    # Finished: EOS among the top k continuations, scored with the brevity penalty.
    new_scores = cand_logprobs / brevity_penalty(alpha, i + 1.0)
    new_scores = jnp.where(is_eos & (jnp.arange(2 * k) < k)[None], new_scores, _NEG)
    all_seqs = jnp.concatenate([finished_seqs, cand_seqs], axis=1)
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    finished_scores, top = jax.lax.top_k(all_scores, k)
    finished_seqs = jnp.take_along_axis(all_seqs, top[:, :, None], axis=1)

    # Live: the best k continuations that did not end.
    live_candidates = jnp.where(is_eos, _NEG, cand_logprobs)
    live_logprobs, top = jax.lax.top_k(live_candidates, k)
    live_seqs = jnp.take_along_axis(cand_seqs, top[:, :, None], axis=1)
    cache = _gather_beams(cache, jnp.take_along_axis(cand_beam, top, axis=1), batch, k)
    return i + 1, live_seqs, live_logprobs, cache, finished_seqs, finished_scores

  init = (jnp.array(0), jnp.zeros((batch, k, length), jnp.int32), live_logprobs, cache,
          jnp.zeros((batch, k, length), jnp.int32), jnp.full((batch, k), _NEG))
  i, live_seqs, live_logprobs, _, finished_seqs, finished_scores = jax.lax.while_loop(
      cond, body, init)
  # Hypotheses cut off by the length limit compete with the finished ones.
  live_scores = jnp.where(i >= length, live_logprobs / brevity_penalty(alpha, 1.0 * length),
                          _NEG)
  all_seqs = jnp.concatenate([finished_seqs, live_seqs], axis=1)
  all_scores = jnp.concatenate([finished_scores, live_scores], axis=1)
  scores, top = jax.lax.top_k(all_scores, k)
  return jnp.take_along_axis(all_seqs, top[:, :, None], axis=1), scores


def _last_tokens(seqs: Array, i: Array, start_id: int) -> Array:
  """The token each beam emitted at step `i - 1` (the start token at step 0)."""
  previous = jax.lax.dynamic_index_in_dim(seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False)
  return jnp.where(i == 0, start_id, previous)

