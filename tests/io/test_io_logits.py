"""A transformers checkpoint loaded by us gives transformers' logits in our Flax T5."""
import json

import jax
import numpy as np
import pytest

from io_testing import example_tokens, hf_logits, tiny_hf_model
from prompt_tuning.io import load_pretrained
from prompt_tuning.models.network import T5


@pytest.mark.parametrize("kind,scale", [
    ("t5_1_0", None),   # tied, scaled: logits_via_embedding
    ("t5_1_1", None),   # separate lm_head, unscaled
    ("t5_1_1", True),   # separate lm_head, scaled: the scale folded into the kernel
    ("t5_1_0", False),  # tied, unscaled: the embedding as a logits_dense kernel
])
def test_logits_match_transformers(kind, scale, tmp_path):
  model = tiny_hf_model(kind, seed=1)
  if scale is not None:
    model.config.scale_decoder_outputs = scale
  model.save_pretrained(tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["scale_decoder_outputs"] == (
      scale if scale is not None else kind == "t5_1_0")
  config, params = load_pretrained(tmp_path)
  enc, dec = example_tokens(config.vocab_size)
  expected = hf_logits(model, enc, dec)
  ours = np.asarray(jax.jit(T5(config).apply)({"params": params}, enc, dec))
  assert ours.shape == expected.shape
  assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()
