"""The embedded models under prompt_tuning/assets/: what the package ships and claims.

All three are Hugging Face folders that transformers loads and computes the same logits
from; each fits 15 MB; the span-corruption model fills sentinels; LM adaptation made
the adapted model the better prefix LM on held-out prose.
"""
import pathlib

import jax
import numpy as np
import pytest
import torch
import transformers

from prompt_tuning import assets
from prompt_tuning.data import corpora, get_dataset
from prompt_tuning.data.vocab import get_vocabulary
from prompt_tuning.models import load_pretrained
from prompt_tuning.models.decoding import generate
from prompt_tuning.models.network import T5

FILES = ["config.json", "model.safetensors", "spiece.model"]


@pytest.fixture(scope="module")
def models():
  return {name: load_pretrained(assets.embedded_model_path(name))
          for name in assets.EMBEDDED_MODELS}


def test_each_is_shipped_in_the_hugging_face_layout_within_15_mb():
  assert set(assets.EMBEDDED_MODELS) == {"t5_span_corruption", "t5_lm_adapted", "t5_multitask"}
  for name in assets.EMBEDDED_MODELS:
    path = pathlib.Path(assets.embedded_model_path(name))
    assert path.parent == assets.ASSETS_DIR
    assert sorted(p.name for p in path.iterdir()) == FILES
    assert sum(p.stat().st_size for p in path.iterdir()) <= 15_000_000, name


def test_unknown_or_missing_embedded_model_says_what_to_do(monkeypatch, tmp_path):
  with pytest.raises(ValueError, match="t5_lm_adapted"):
    assets.embedded_model_path("t5_xxl")
  monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
  with pytest.raises(FileNotFoundError, match="--gin.INITIAL_CHECKPOINT_PATH"):
    assets.embedded_model_path("t5_lm_adapted")


@pytest.mark.parametrize("name", assets.EMBEDDED_MODELS)
def test_transformers_loads_it_and_agrees_with_us(models, name):
  path = assets.embedded_model_path(name)
  config, params = models[name]
  hf = transformers.T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
  tokenizer = transformers.T5Tokenizer.from_pretrained(path)
  text = "review: an engaging, funny and moving film"
  ids = tokenizer(text).input_ids
  assert ids == list(get_vocabulary().encode(text)) + [1]
  enc = np.array([ids, ids[:5] + [0] * (len(ids) - 5)])
  dec = np.array([[0, 5, 9, 11], [0, 7, 3, 2]])
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                decoder_input_ids=torch.tensor(dec)).logits.numpy()
  ours = np.asarray(jax.jit(T5(config).apply)({"params": params}, enc, dec))
  assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def _prose_batches(task, lengths, n=4):
  corpora.prepare(["prose"], verbose=False)
  ds = get_dataset(task, "validation", lengths, batch_size=16, shuffle=False, seed=None,
                   num_epochs=1)
  return list(ds.take(n).as_numpy_iterator())


def _loss_per_token(config, params, batches):
  fn = jax.jit(lambda b: T5(config).apply(
      {"params": params}, b["encoder_input_tokens"], b["decoder_input_tokens"],
      b["decoder_target_tokens"], method=T5.token_losses))
  total = count = 0.0
  for batch in batches:
    loss, _, weights = fn(batch)
    total += float(loss.sum())
    count += float(weights.sum())
  return total / count


def test_lm_adaptation_made_the_better_prefix_lm_on_held_out_prose(models):
  batches = _prose_batches("lm_adaptation_prefix_lm", {"inputs": 128, "targets": 64})
  adapted = _loss_per_token(*models["t5_lm_adapted"], batches)
  span = _loss_per_token(*models["t5_span_corruption"], batches)
  # A continuation is not what span corruption taught: its loss is clearly higher.
  assert adapted < span - 0.25, (adapted, span)


def test_span_corruption_model_predicts_the_first_sentinel(models):
  config, params = models["t5_span_corruption"]
  batch = _prose_batches("pretrain_span_corruption", {"inputs": 128, "targets": 32}, n=1)[0]
  tokens, _ = generate(T5(config), params, batch["encoder_input_tokens"], 2)
  sentinel = batch["decoder_target_tokens"][:, 0]
  assert (sentinel >= 8000).all()  # the targets start with <extra_id_0>
  assert (np.asarray(tokens)[:, 0] == sentinel).mean() >= 0.9
