"""Sampling and stopping behaviour of `decoding.py`, checked against numpy probabilities."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from prompt_tuning.models import decoding, get_config
from prompt_tuning.models.network import T5

ENC = jnp.array([[5, 6, 7, 8, 1, 0]])


@pytest.fixture(scope="module")
def tiny():
  config = get_config("tiny", dropout_rate=0.0)
  params = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(3)))
  # First-step distribution from a teacher-forced pass, computed independently of decoding.
  logits = np.asarray(T5(config).apply({"params": params}, ENC, jnp.zeros((1, 1), jnp.int32)),
                      np.float64)[0, 0]
  return T5(config), params, logits


def _first_tokens(model, params, n, **kwargs):
  batch = jnp.repeat(ENC, n, axis=0)
  tokens, _ = decoding.generate(model, params, batch, max_decode_length=1,
                                rng=jax.random.PRNGKey(7), **kwargs)
  return np.asarray(tokens[:, 0])


def test_sampling_follows_the_softmax(tiny):
  model, params, logits = tiny
  n = 4000
  counts = np.bincount(_first_tokens(model, params, n, temperature=1.0), minlength=logits.size)
  probs = scipy.special.softmax(logits)
  sigma = np.sqrt(probs * (1 - probs) / n)
  assert np.all(np.abs(counts / n - probs) <= 5 * sigma + 1e-3)


def test_temperature_sharpens(tiny):
  model, params, logits = tiny
  n = 2000
  hot = _first_tokens(model, params, n, temperature=2.0)
  cold = _first_tokens(model, params, n, temperature=0.3)
  top = int(np.argmax(logits))
  assert np.mean(cold == top) > np.mean(hot == top)
  probs = scipy.special.softmax(logits / 0.3)
  assert abs(np.mean(cold == top) - probs[top]) < 5 * np.sqrt(probs[top] / n) + 1e-3


def test_top_k_keeps_only_the_k_most_likely(tiny):
  model, params, logits = tiny
  allowed = set(np.argsort(-logits)[:3].tolist())
  samples = _first_tokens(model, params, 500, temperature=1.0, top_k=3)
  assert set(samples.tolist()) <= allowed
  assert len(set(samples.tolist())) > 1


def test_top_p_keeps_the_smallest_nucleus(tiny):
  model, params, logits = tiny
  probs = scipy.special.softmax(logits)
  order = np.argsort(-probs)
  nucleus = order[:int(np.searchsorted(np.cumsum(probs[order]), 0.5) + 1)]
  samples = _first_tokens(model, params, 500, temperature=1.0, top_p=0.5)
  assert set(samples.tolist()) <= set(nucleus.tolist())


def test_greedy_is_deterministic_and_beam_of_one_is_greedy(tiny):
  model, params, _ = tiny
  batch = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 11, 1, 0, 0]])
  a, sa = decoding.generate(model, params, batch, max_decode_length=8)
  b, _ = decoding.generate(model, params, batch, max_decode_length=8)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  beam, sb = decoding.beam_search(model, params, batch, max_decode_length=8, num_beams=1,
                                  alpha=0.0)
  np.testing.assert_array_equal(np.asarray(beam[:, 0]), np.asarray(a))
  np.testing.assert_allclose(np.asarray(sb[:, 0]), np.asarray(sa), rtol=1e-5)


def test_stops_at_eos_and_pads(tiny):
  model, params, _ = tiny
  batch = jnp.repeat(ENC, 400, axis=0)
  tokens, _ = decoding.generate(model, params, batch, max_decode_length=8,
                                rng=jax.random.PRNGKey(0), temperature=3.0)
  tokens = np.asarray(tokens)
  ended = [row for row in tokens if 1 in row[:-1]]
  assert ended, "a hot sampler over 400 rows should emit EOS somewhere"
  for row in ended:
    first = list(row).index(1)
    assert not row[first + 1:].any(), f"tokens after EOS in {row}"
  assert any(row[-1] != 0 and 1 not in row for row in tokens), "some rows run to the limit"


def test_bad_arguments_are_named(tiny):
  model, params, _ = tiny
  with pytest.raises(ValueError, match="needs an `rng`"):
    decoding.generate(model, params, ENC, max_decode_length=2, temperature=1.0)
  with pytest.raises(ValueError, match="num_beams"):
    decoding.beam_search(model, params, ENC, max_decode_length=2, num_beams=0)


def test_cached_steps_equal_the_teacher_forced_pass_and_the_cache_is_t5x_layout(tiny):
  model, params, _ = tiny
  cfg = model.config
  enc = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 11, 1, 0, 0]])
  dec = jnp.array([[0, 4, 9, 3, 7], [0, 2, 2, 8, 5]])
  reference = np.asarray(model.apply({"params": params}, enc, dec))  # no cache at all
  encoded, mask = model.apply({"params": params}, enc, method=T5.encode)
  run = lambda variables, tokens: model.apply(variables, encoded, mask, tokens, decode=True,
                                              method=T5.decode, mutable=["cache"])
  _, state = run({"params": params}, jnp.zeros_like(dec))
  layer = state["cache"]["decoder"]["layers_0"]
  batch, heads, kv, length = 2, cfg.num_heads, cfg.head_dim, dec.shape[1]
  assert layer["self_attention"]["cached_key"].shape == (batch, heads, kv, length)
  assert layer["self_attention"]["cached_value"].shape == (batch, heads, length, kv)
  assert layer["encoder_decoder_attention"]["cross_key"].shape == (batch, heads, kv, 6)
  assert layer["encoder_decoder_attention"]["cross_value"].shape == (batch, heads, 6, kv)
  steps = []
  for i in range(length):
    logits, state = run({"params": params, "cache": state["cache"]}, dec[:, i:i + 1])
    steps.append(np.asarray(logits[:, 0]))
  np.testing.assert_allclose(np.stack(steps, axis=1), reference, rtol=1e-5, atol=1e-5)


def test_beam_reordering_moves_the_self_attention_caches_and_leaves_the_encoders(tiny):
  model, params, _ = tiny
  enc = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 11, 1, 0, 0]])
  cache, _ = decoding._model_fns(model, params, enc, 4, 2, None)  # 2 examples x 2 beams
  # Give each row distinct self-attention contents so a reordering is visible.
  cache = jax.tree_util.tree_map_with_path(
      lambda p, x: x + jnp.arange(4.0).reshape((4,) + (1,) * (x.ndim - 1))
      if p[-1].key == "cached_key" else x, cache)
  moved = decoding._gather_beams(cache, jnp.array([[1, 1], [1, 0]]), batch=2, beams=2)
  layers = [name for name in cache["decoder"] if name.startswith("layers_")]
  assert len(layers) == model.config.num_decoder_layers
  for name in layers:
    layer = cache["decoder"][name]
    before, after = layer["self_attention"], moved["decoder"][name]["self_attention"]
    np.testing.assert_array_equal(after["cached_key"],
                                  np.asarray(before["cached_key"])[[1, 1, 3, 2]])
    cross = layer["encoder_decoder_attention"]
    assert moved["decoder"][name]["encoder_decoder_attention"]["cross_key"] is cross["cross_key"]
    # ...which is right because one example's beams share them.
    np.testing.assert_array_equal(cross["cross_key"][0], cross["cross_key"][1])
