"""Deep prompts (P-tuning v2) as a Method: prefix tuning's seam with P-tuning v2's defaults."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.io import CheckpointError
from prompt_tuning.methods import DeepPrompts, PrefixTuning, detect, from_description


def test_defaults_train_every_encoder_layers_keys_and_values_directly(frozen):
  config, params, enc, dec = frozen
  method = DeepPrompts()
  assert (method.length, method.attention, method.reparameterize) == (20, ("encoder",), False)
  model = method.build_model(config)
  tree = nn.meta.unbox(method.init_params(model, params, jax.random.PRNGKey(1)))
  layers = tree["kv_prefixes"]["encoder"]
  assert list(tree["kv_prefixes"]) == ["encoder"]
  assert sorted(layers) == [f"layers_{i}" for i in range(config.num_encoder_layers)]
  assert layers["layers_0"]["key"].shape == (20, config.num_heads, config.head_dim)
  want = model.apply({"params": {**params, **tree}}, enc, dec)
  arrays = method.export(jax.device_get(tree), config)
  side = method.sidecar(config, "f", 3)
  assert side["method"] == "deep_prompts" and side["readers"] == ["prefix_tuning"]
  reader = PrefixTuning()  # prefix tuning's commands read a deep-prompt export
  reader.check_sidecar(side, config, "f", "deep.npz")
  loaded_model, loaded = reader.load(arrays, config, "deep.npz")
  got = loaded_model.apply({"params": {**params, **loaded}}, enc, dec)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  assert from_description(method.describe()) == method
  assert detect(tree) is PrefixTuning  # a bare checkpoint reads as its twin, same export
  with pytest.raises(CheckpointError, match="deep_prompts"):
    DeepPrompts().check_sidecar(PrefixTuning().sidecar(config, None), config, None, "p.npz")


def test_decoder_and_reparameterised_variants(frozen):
  config, params, *_ = frozen
  method = DeepPrompts(length=4, attention=("encoder", "decoder", "cross"),
                       reparameterize=True, hidden_dim=8)
  tree = method.init_params(method.build_model(config), params, jax.random.PRNGKey(2))
  assert sorted(tree["kv_prefixes"]) == ["cross", "decoder", "encoder"]
  assert sorted(tree["kv_prefixes"]["encoder"]) == ["embedding", "hidden", "out"]
  with pytest.raises(ValueError, match="DEEP_PROMPT_ATTENTION"):
    DeepPrompts(attention=("keys",))
