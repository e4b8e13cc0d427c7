"""The key/value prefix seam: every attention kind against an independent numpy T5,
with padding, and through the decode cache (greedy and beam search)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import t5_numpy
from prompt_tuning.models import decoding, get_config
from prompt_tuning.models.network import KV_PREFIX_KINDS, T5

# (kind, prefix length, rows): the cross-attention prefix is one per example.
LAYOUT = (("encoder", 3, 1), ("decoder", 2, 1), ("cross", 4, 2))
BATCH = 2


class ParamPrefixes(nn.Module):
  """Random prefixes held as parameters, one `(key, value)` per layer and kind."""
  layout: tuple
  num_layers: int
  heads: int
  head_dim: int

  @nn.compact
  def __call__(self, kind, task_ids=None):
    found = [(p, rows) for k, p, rows in self.layout if k == kind]
    if not found:
      return None
    p, rows = found[0]
    init = nn.initializers.normal(1.0)
    shape = (rows, p, self.heads, self.head_dim)
    return [(self.param(f"{kind}_{i}_key", init, shape),
             self.param(f"{kind}_{i}_value", init, shape)) for i in range(self.num_layers)]


def _model(config, layout=LAYOUT):
  return T5(config, kv_prefixes=ParamPrefixes(layout, config.num_encoder_layers,
                                              config.num_heads, config.head_dim))


@pytest.fixture(scope="module")
def setup():
  config = get_config("tiny", dropout_rate=0.0, vocab_size=64)
  model = _model(config)
  params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(0), BATCH))
  rng = np.random.RandomState(0)
  enc = rng.randint(2, 64, (BATCH, 7)).astype(np.int32)
  enc[1, 4:] = 0  # padding
  targets = rng.randint(2, 64, (BATCH, 5)).astype(np.int32)
  targets[0, 3:] = 0
  dec_in = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1)
  return config, model, params, enc, dec_in, targets


def _numpy_prefixes(params, layout=LAYOUT):
  table = jax.tree.map(lambda x: np.asarray(x, np.float64), params["kv_prefixes"])
  return {kind: [(table[f"{kind}_{i}_key"], table[f"{kind}_{i}_value"]) for i in range(2)]
          for kind, _, _ in layout}


def _reference(config, params, enc, dec_in, targets, layout=LAYOUT):
  as64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  return t5_numpy.forward(as64, config, enc, dec_in, targets,
                          _numpy_prefixes(params, layout) if layout else None)


@pytest.mark.parametrize("kinds", [KV_PREFIX_KINDS, ("encoder",), ("decoder",), ("cross",)])
def test_teacher_forced_logits_match_numpy(setup, kinds):
  config, _, _, enc, dec_in, targets = setup
  layout = tuple(row for row in LAYOUT if row[0] in kinds)
  model = _model(config, layout)
  params = nn.meta.unbox(model.init_params(jax.random.PRNGKey(1), BATCH))
  logits = np.asarray(model.apply({"params": params}, enc, dec_in, targets))
  want = _reference(config, params, enc, dec_in, targets, layout)
  plain = _reference(config, params, enc, dec_in, targets, ())
  real = targets > 0
  np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4)
  assert np.abs(want[real] - plain[real]).max() > 1e-2  # the prefix changes the output


def test_encoder_padding_does_not_change_real_positions(setup):
  config, model, params, enc, dec_in, targets = setup
  logits = model.apply({"params": params}, enc, dec_in, targets)
  longer = np.concatenate([enc, np.zeros((BATCH, 5), np.int32)], axis=1)
  padded = model.apply({"params": params}, longer, dec_in, targets)
  real = targets > 0
  np.testing.assert_allclose(np.asarray(padded)[real], np.asarray(logits)[real], atol=1e-5)


def test_cached_decode_steps_equal_teacher_forced_logits(setup):
  config, model, params, enc, dec_in, targets = setup
  full = np.asarray(model.apply({"params": params}, enc, dec_in))
  encoded, mask = model.apply({"params": params}, enc, method=T5.encode)
  _, state = model.apply({"params": params}, encoded, mask, jnp.zeros_like(dec_in),
                         decode=True, method=T5.decode, mutable=["cache"])
  cache = state["cache"]
  for i in range(dec_in.shape[1]):
    step, state = model.apply({"params": params, "cache": cache}, encoded, mask,
                              dec_in[:, i:i + 1], decode=True, method=T5.decode,
                              mutable=["cache"])
    cache = state["cache"]
    np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, i], rtol=1e-5, atol=1e-5)


def _reference_logprobs(config, params, enc, tokens):
  """log p(next token) at every position of `tokens` (start token prepended), numpy."""
  dec_in = np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), tokens[:, :-1]], 1)
  logits = _reference(config, params, enc, dec_in, np.ones_like(tokens))
  return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                             keepdims=True)) \
      - logits.max(-1, keepdims=True)


def test_greedy_decoding_is_the_stepwise_argmax_of_the_reference(setup):
  config, model, params, enc, _, _ = setup
  length = 6
  tokens, _ = decoding.generate(model, params, jnp.asarray(enc), max_decode_length=length,
                                eos_id=-1)
  tokens = np.asarray(tokens)
  want = np.zeros((BATCH, length), np.int32)
  for i in range(length):  # teacher-forced on its own greedy prefix, one step at a time
    want[:, i] = _reference_logprobs(config, params, enc, want)[:, i].argmax(-1)
  np.testing.assert_array_equal(tokens, want)


def test_beam_search_scores_are_reference_log_likelihoods(setup):
  config, model, params, enc, _, _ = setup
  length = 5
  seqs, scores = decoding.beam_search(model, params, jnp.asarray(enc), length, num_beams=3,
                                      alpha=0.0, eos_id=-1)
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  for beam in range(3):
    logprobs = _reference_logprobs(config, params, enc, seqs[:, beam])
    total = np.take_along_axis(logprobs, seqs[:, beam, :, None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(scores[:, beam], total, rtol=1e-4, atol=1e-4)
  greedy, _ = decoding.generate(model, params, jnp.asarray(enc), max_decode_length=length,
                                eos_id=-1)
  one, _ = decoding.beam_search(model, params, jnp.asarray(enc), length, num_beams=1,
                                alpha=0.0, eos_id=-1)
  np.testing.assert_array_equal(np.asarray(one)[:, 0], np.asarray(greedy))


def test_sharded_heads_give_the_same_logits(setup):
  """Prefix activations are constrained to replicated rows with heads over `model`."""
  from prompt_tuning.train import partitioning
  config, model, params, enc, dec_in, targets = setup
  want = np.asarray(model.apply({"params": params}, enc, dec_in, targets))
  mesh = partitioning.make_mesh((2, 2), jax.devices()[:4])
  abstract = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), BATCH))
  shardings = nn.meta.unbox(partitioning.shardings_for(abstract, mesh))
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
    placed = partitioning.place(params, shardings)
    got = jax.jit(lambda p: model.apply({"params": p}, enc, dec_in, targets))(placed)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_a_prefix_of_the_wrong_shape_is_refused(setup):
  config, _, _, enc, dec_in, _ = setup
  model = _model(config.replace(head_dim=4), (("encoder", 2, 1),))
  with pytest.raises(ValueError, match=r"must be \[batch or 1, p, 4, 8\]"):
    # The prefixes are made for head_dim 4 but the attention is built for 8.
    T5(config, kv_prefixes=model.kv_prefixes).init_params(jax.random.PRNGKey(0))
