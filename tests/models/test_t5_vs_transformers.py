"""Our Flax T5 against transformers' PyTorch `T5ForConditionalGeneration`, the reference.

Random weights are written by transformers (`save_pretrained`), read back through our
public `load_pretrained`, and both models see the same padded batches.
"""
import numpy as np
import pytest
import scipy.special

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

# The public entry points, as a user imports them.
from prompt_tuning.models import T5, T5Config, decoding, load_pretrained  # noqa: E402

# (name, transformers config overrides); tiny, but each varies one thing T5 variants vary.
CONFIGS = {
    "t5_1_1_odd_heads": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                             num_heads=3, d_kv=5, d_model=24, d_ff=40, num_layers=2,
                             num_decoder_layers=3, relative_attention_num_buckets=16,
                             relative_attention_max_distance=20),
    "t5_1_0_tied": dict(feed_forward_proj="relu", tie_word_embeddings=True, num_heads=4,
                        d_kv=8, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2),
    "t5_1_1_one_head_wide_kv": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                    num_heads=1, d_kv=48, d_model=16, d_ff=24, num_layers=1,
                                    num_decoder_layers=2, relative_attention_num_buckets=8,
                                    relative_attention_max_distance=12),
}
VOCAB = 60
ENC = np.array([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1],
                [16, 17, 18, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                [19, 20, 21, 22, 23, 24, 1, 0, 0, 0, 0, 0]])
DEC = np.array([[0, 3, 4, 5, 6, 7], [0, 8, 9, 1, 0, 0], [0, 10, 11, 12, 13, 1]])


def _random_hf_model(overrides, seed=0):
  """A transformers T5 whose weights are random enough to give varied greedy outputs."""
  torch.manual_seed(seed)
  config = transformers.T5Config(vocab_size=VOCAB, dropout_rate=0.0, pad_token_id=0,
                                 eos_token_id=1, decoder_start_token_id=0, **overrides)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
      elif p.ndim == 2:
        p.normal_(0.0, 1.0 / np.sqrt(p.shape[-1]) if "shared" not in name else 1.0)
    if not overrides["tie_word_embeddings"]:
      # transformers 5 ties by default: give the output layer weights of its own.
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, overrides["d_model"]) * 0.3)
  return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
  hf = _random_hf_model(CONFIGS[request.param])
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path)
  config, params = load_pretrained(str(path))
  return request.param, hf, config, params


def _hf_logits(hf, enc, dec):
  with torch.no_grad():
    return hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
              decoder_input_ids=torch.tensor(dec)).logits.numpy()


def _generate(hf, **kwargs):
  # transformers sizes its default cache by the encoder's depth, which breaks decoders
  # deeper than their encoder; an empty cache grows to fit.
  cache = transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                           transformers.DynamicCache())
  with torch.no_grad():
    return hf.generate(input_ids=torch.tensor(ENC), attention_mask=torch.tensor(ENC > 0),
                       do_sample=False, max_new_tokens=10, past_key_values=cache,
                       **kwargs).numpy()[:, 1:]


def _until_eos(row, eos=1):
  row = list(row)
  return row[:row.index(eos) + 1] if eos in row else row


def test_config_read_from_transformers(pair):
  name, hf, config, _ = pair
  c = hf.config
  assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (
      c.d_model, c.num_heads, c.d_kv, c.d_ff)
  assert (config.num_encoder_layers, config.num_decoder_layers) == (c.num_layers,
                                                                     c.num_decoder_layers)
  assert config.logits_via_embedding == name.endswith("tied")
  assert config.mlp_activations == (("relu",) if "1_0" in name else ("gelu", "linear"))


def test_logits_match_transformers(pair):
  _, hf, config, params = pair
  assert isinstance(config, T5Config)
  ours = np.asarray(T5(config).apply({"params": params}, jnp.asarray(ENC), jnp.asarray(DEC),
                                     None, enable_dropout=False))
  ref = _hf_logits(hf, ENC, DEC)
  assert ours.shape == (3, DEC.shape[1], VOCAB)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_padding_does_not_change_real_positions(pair):
  _, _, config, params = pair
  model = T5(config)
  short = model.apply({"params": params}, jnp.asarray(ENC[1:2, :4]), jnp.asarray(DEC[1:2]))
  padded = model.apply({"params": params}, jnp.asarray(ENC[1:2]), jnp.asarray(DEC[1:2]))
  # Float rounding only (padding changes the reduction's length and order: 1.5e-6 seen
  # at logits of magnitude 5); attending to padding would move logits by far more.
  padded = np.asarray(padded)
  np.testing.assert_allclose(np.asarray(short), padded, rtol=1e-5,
                             atol=1e-5 * np.abs(padded).max())


def test_greedy_decoding_matches_generate(pair):
  _, hf, config, params = pair
  ref = _generate(hf)
  ours, _ = decoding.generate(T5(config), params, jnp.asarray(ENC), max_decode_length=10)
  ours = np.asarray(ours)
  assert len(set(map(tuple, ours))) > 1, "degenerate weights: every row decodes the same"
  for row_ours, row_ref in zip(ours, ref):
    assert _until_eos(row_ours) == _until_eos(row_ref)
    tail = row_ours[len(_until_eos(row_ours)):]
    assert not tail.any(), "positions after EOS must be padding"


def test_beam_search_best_matches_generate(pair):
  _, hf, config, params = pair
  ref = _generate(hf, num_beams=4, length_penalty=0.0)
  ours, scores = decoding.beam_search(T5(config), params, jnp.asarray(ENC),
                                      max_decode_length=10, num_beams=4, alpha=0.0)
  ours, scores = np.asarray(ours), np.asarray(scores)
  assert ours.shape == (3, 4, 10)
  assert np.all(np.diff(scores, axis=1) <= 0), "beams must come best first"
  for row_ours, row_ref in zip(ours[:, 0], ref):
    assert _until_eos(row_ours) == _until_eos(row_ref)


def test_beam_score_is_the_sequence_log_likelihood(pair):
  """The best beam's score equals the teacher-forced log-probability of its tokens."""
  _, _, config, params = pair
  tokens, scores = decoding.beam_search(T5(config), params, jnp.asarray(ENC),
                                        max_decode_length=10, num_beams=3, alpha=0.0)
  best = np.asarray(tokens[:, 0])
  dec_in = np.concatenate([np.zeros((3, 1), int), best[:, :-1]], axis=1)
  logits = np.asarray(T5(config).apply({"params": params}, jnp.asarray(ENC),
                                       jnp.asarray(dec_in)), np.float64)
  logp = scipy.special.log_softmax(logits, axis=-1)
  for b in range(3):
    n = len(_until_eos(best[b]))
    expected = sum(logp[b, t, best[b, t]] for t in range(n))
    np.testing.assert_allclose(scores[b, 0], expected, rtol=1e-4)


def test_decoder_self_attention_prefix_matches_transformers_past_key_values(pair):
  """A decoder self-attention prefix is what transformers' cache API calls past keys and
  values. transformers places them at positions 0..p-1 with relative position bias; our
  prefix has none (zero bias), so its first layer's bias is zeroed over the prefix
  columns: the rest (the concatenation, the causal mask over p + length keys, the
  shifted query positions) is transformers' own."""
  from prompt_tuning.methods import PrefixTuning
  _, hf, config, params = pair
  p = 3
  rng = np.random.RandomState(1)
  shape = (p, config.num_heads, config.head_dim)
  arrays = {f"decoder/layers_{i}/{part}": rng.randn(*shape).astype(np.float32)
            for i in range(config.num_decoder_layers) for part in ("key", "value")}
  model, prefixes = PrefixTuning(p, attention=("decoder",), reparameterize=False).load(
      arrays, config, "random prefixes")
  ours = np.asarray(model.apply({"params": {**params, **prefixes}}, jnp.asarray(ENC),
                                jnp.asarray(DEC)))

  cache = transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                           transformers.DynamicCache())
  batch = ENC.shape[0]
  for i in range(config.num_decoder_layers):
    as_hf = lambda a: torch.tensor(a).permute(1, 0, 2)[None].expand(batch, -1, -1, -1)
    cache.self_attention_cache.update(as_hf(arrays[f"decoder/layers_{i}/key"]),
                                      as_hf(arrays[f"decoder/layers_{i}/value"]), i)
  attention = hf.decoder.block[0].layer[0].SelfAttention
  original = attention.compute_bias

  def zero_over_prefix(*args, **kwargs):
    bias = original(*args, **kwargs).clone()
    bias[..., :p] = 0.0
    return bias

  attention.compute_bias = zero_over_prefix
  import inspect  # transformers 5.x names the argument `cache`, 4.x `past_key_values`
  name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
  try:
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(ENC), attention_mask=torch.tensor(ENC > 0),
               decoder_input_ids=torch.tensor(DEC), **{name: cache}).logits.numpy()
  finally:
    attention.compute_bias = original
  assert cache.self_attention_cache.get_seq_length(0) == p + DEC.shape[1]  # it used ours
  plain = _hf_logits(hf, ENC, DEC)
  assert np.abs(ref - plain).max() > 1e-3  # the prefix matters
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
