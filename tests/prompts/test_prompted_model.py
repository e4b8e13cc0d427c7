"""The prompted T5 against transformers fed the same prompt through `inputs_embeds`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from prompt_tuning.models import decoding, load_pretrained, losses  # noqa: E402
from prompt_tuning.models.network import T5  # noqa: E402
from prompt_tuning.prompts import (Prompt, from_array, from_sampled_vocab,  # noqa: E402
                                   init_prompt_params, prompted_t5)

ENC = np.array([[5, 6, 7, 8, 9, 1], [10, 11, 1, 0, 0, 0]])
DEC = np.array([[0, 3, 4, 5], [0, 6, 1, 0]])
TGT = np.array([[3, 4, 5, 1], [6, 1, 0, 0]])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  torch.manual_seed(0)
  hf_config = transformers.T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                    num_heads=4, feed_forward_proj="gated-gelu",
                                    dropout_rate=0.0, decoder_start_token_id=0,
                                    pad_token_id=0, eos_token_id=1)
  hf = transformers.T5ForConditionalGeneration(hf_config).eval()
  with torch.no_grad():
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(40, 16))
    hf.shared.weight.normal_(0, 1)
  path = tmp_path_factory.mktemp("hf")
  hf.save_pretrained(path)
  config, params = load_pretrained(str(path))
  prompt = np.random.RandomState(0).randn(3, 16).astype(np.float32)
  return hf, config, params, prompt


def _hf_inputs(hf, prompt, enc):
  with torch.no_grad():
    emb = hf.shared(torch.tensor(enc))
    p = torch.tensor(prompt)[None].expand(enc.shape[0], -1, -1)
    mask = torch.cat([torch.ones(enc.shape[0], prompt.shape[0], dtype=torch.long),
                      torch.tensor(enc > 0).long()], dim=1)
  return torch.cat([p, emb], dim=1), mask


def test_prefix_prompt_equals_transformers_with_inputs_embeds(setup):
  hf, config, params, prompt = setup
  model = prompted_t5(config, 3, from_array(prompt))
  prompt_params = nn.meta.unbox(init_prompt_params(model, params, jax.random.PRNGKey(0)))
  ours = model.apply({"params": {**params, **prompt_params}}, jnp.asarray(ENC),
                     jnp.asarray(DEC))
  embeds, mask = _hf_inputs(hf, prompt, ENC)
  with torch.no_grad():
    ref = hf(inputs_embeds=embeds, attention_mask=mask,
             decoder_input_ids=torch.tensor(DEC)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  plain = T5(config).apply({"params": params}, jnp.asarray(ENC), jnp.asarray(DEC))
  assert not np.allclose(np.asarray(plain), ref, atol=1e-3), "the prompt must matter"


def test_target_log_likelihood_is_the_sum_of_target_log_probs(setup):
  hf, config, params, prompt = setup
  model = prompted_t5(config, 3, from_array(prompt))
  variables = {"params": {**params, "encoder_prompt": {"prompt": jnp.asarray(prompt)}}}
  score = model.apply(variables, jnp.asarray(ENC), jnp.asarray(DEC), jnp.asarray(TGT),
                      method=T5.target_log_likelihood)
  embeds, mask = _hf_inputs(hf, prompt, ENC)
  with torch.no_grad():
    logits = hf(inputs_embeds=embeds, attention_mask=mask,
                decoder_input_ids=torch.tensor(DEC)).logits.numpy().astype(np.float64)
  logp = scipy.special.log_softmax(logits, -1)
  expected = [sum(logp[b, t, TGT[b, t]] for t in range(4) if TGT[b, t] > 0) for b in range(2)]
  np.testing.assert_allclose(np.asarray(score), expected, rtol=1e-5)


def test_prompted_greedy_decoding_matches_generate_and_never_emits_prompt_positions(setup):
  hf, config, params, prompt = setup
  model = prompted_t5(config, 3, from_array(prompt))
  variables = {**params, "encoder_prompt": {"prompt": jnp.asarray(prompt)}}
  tokens, _ = decoding.generate(model, variables, jnp.asarray(ENC), max_decode_length=7)
  assert tokens.shape == (2, 7)  # decoder positions only: nothing of the 3 prompt rows
  embeds, mask = _hf_inputs(hf, prompt, ENC)
  with torch.no_grad():
    ref = hf.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                      max_new_tokens=7).numpy()
  ref = ref[:, 1:] if ref.shape[1] == 8 else ref
  for ours_row, ref_row in zip(np.asarray(tokens), ref):
    ours_row, ref_row = list(ours_row), list(ref_row)
    cut = lambda r: r[:r.index(1) + 1] if 1 in r else r
    assert cut(ours_row) == cut(ref_row)


def test_sampled_vocab_prompt_starts_from_frozen_rows(setup):
  _, config, params, _ = setup
  model = prompted_t5(config, 4, from_sampled_vocab(population_size=10))
  prompt = np.asarray(nn.meta.unbox(init_prompt_params(model, params, jax.random.PRNGKey(3)))
                      ["encoder_prompt"]["prompt"])
  table = np.asarray(params["token_embedder"]["embedding"])[:10]
  for row in prompt:
    assert np.any(np.all(table == row, axis=1))


def test_prompt_checks_length_and_width(setup):
  _, config, params, prompt = setup
  with pytest.raises(ValueError, match="prompt length must be a positive integer, got 0"):
    prompted_t5(config, 0)
  with pytest.raises(ValueError, match="unknown prompt placement"):
    Prompt(3, placement="middle")
  model = prompted_t5(config, 3)
  wrong = {**params, "encoder_prompt": {"prompt": jnp.zeros((3, 8))}}
  with pytest.raises(ValueError, match=r"\(3, 8\) but this model needs \(3, 16\)"):
    model.apply({"params": wrong}, jnp.asarray(ENC), jnp.asarray(DEC))
  with pytest.raises(ValueError, match="no encoder_prompt"):
    init_prompt_params(T5(config), params, jax.random.PRNGKey(0))


def test_cross_entropy_with_smoothing_and_z_loss_matches_numpy():
  rng = np.random.RandomState(0)
  logits = rng.randn(2, 3, 7).astype(np.float32) * 3
  targets = rng.randint(0, 7, (2, 3))
  loss, z = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), z_loss=1e-2,
                                 label_smoothing=0.1)
  logp = scipy.special.log_softmax(logits.astype(np.float64), -1)
  soft = np.full((2, 3, 7), 0.1 / 6)
  np.put_along_axis(soft, targets[..., None], 0.9, -1)
  entropy = -(0.9 * np.log(0.9) + 6 * (0.1 / 6) * np.log(0.1 / 6))
  log_z = scipy.special.logsumexp(logits.astype(np.float64), -1)
  expected = -(soft * logp).sum(-1) - entropy + 1e-2 * log_z ** 2
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(z), 1e-2 * log_z ** 2, rtol=1e-5)


def test_prompt_longer_than_the_encoder_budget_is_refused():
  from prompt_tuning.prompts import check_prompt_budget
  assert check_prompt_budget(100, 128, 512) == 228
  with pytest.raises(ValueError, match="a prompt of 500 plus inputs of 128 is 628 encoder "
                                       "positions, over the budget of 512"):
    check_prompt_budget(500, 128, 512)
  with pytest.raises(ValueError, match="PROMPT_LENGTH must be positive"):
    check_prompt_budget(0, 128)


def test_token_losses_mask_padding_and_match_the_log_likelihood(setup):
  _, config, params, prompt = setup
  model = prompted_t5(config, 3, from_array(prompt))
  variables = {"params": {**params, "encoder_prompt": {"prompt": jnp.asarray(prompt)}}}
  loss, z, weights = model.apply(variables, jnp.asarray(ENC), jnp.asarray(DEC),
                                 jnp.asarray(TGT), method=T5.token_losses)
  np.testing.assert_array_equal(np.asarray(weights), (TGT > 0).astype(np.float32))
  assert np.all(np.asarray(loss)[TGT == 0] == 0) and np.all(np.asarray(z) == 0)
  score = model.apply(variables, jnp.asarray(ENC), jnp.asarray(DEC), jnp.asarray(TGT),
                      method=T5.target_log_likelihood)
  # Without smoothing or z-loss the per-token loss is -log p(target): they must agree.
  np.testing.assert_allclose(-np.asarray(loss).sum(1), np.asarray(score), rtol=1e-5)
