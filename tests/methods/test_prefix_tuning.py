"""Prefix tuning as a Method: parameters, export without the MLP, read back, real-word init."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.io import CheckpointError, exports
from prompt_tuning.methods import PrefixTuning, detect, from_description
from prompt_tuning.models.network import T5


def _trained(method, config, params):
  model = method.build_model(config)
  tree = nn.meta.unbox(method.init_params(model, params, jax.random.PRNGKey(1)))
  return model, tree


@pytest.mark.parametrize("reparameterize", [True, False])
def test_export_drops_the_mlp_and_computes_the_same_logits(frozen, reparameterize):
  config, params, enc, dec = frozen
  method = PrefixTuning(length=3, attention=("encoder", "cross"), hidden_dim=16,
                        reparameterize=reparameterize)
  model, tree = _trained(method, config, params)
  assert list(tree) == ["kv_prefixes"] and sorted(tree["kv_prefixes"]) == ["cross", "encoder"]
  if reparameterize:
    assert sorted(tree["kv_prefixes"]["encoder"]) == ["embedding", "hidden", "out"]
  want = model.apply({"params": {**params, **tree}}, enc, dec)
  arrays = method.export(jax.device_get(tree), config)
  assert sorted(arrays) == sorted(f"{k}/layers_{i}/{p}" for k in ("encoder", "cross")
                                  for i in range(2) for p in ("key", "value"))
  assert all(a.shape == (3, config.num_heads, config.head_dim) for a in arrays.values())
  loaded_model, loaded = method.load(arrays, config, "test.npz")
  got = loaded_model.apply({"params": {**params, **loaded}}, enc, dec)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_only_the_chosen_attention_kinds_get_prefixes(frozen):
  config, params, enc, dec = frozen
  plain = T5(config).apply({"params": params}, enc, dec)
  for kind in ("encoder", "decoder", "cross"):
    method = PrefixTuning(length=2, attention=(kind,), hidden_dim=8)
    model, tree = _trained(method, config, params)
    assert sorted(tree["kv_prefixes"]) == [kind]
    out = model.apply({"params": {**params, **tree}}, enc, dec)
    assert np.abs(np.asarray(out) - np.asarray(plain)).max() > 1e-3


def test_real_word_init_holds_the_frozen_models_keys_of_those_words(frozen):
  config, params, _, _ = frozen

  class Ids:  # a vocabulary: "a b" -> [5, 9]
    encode = staticmethod(lambda text: [5, 9])

  method = PrefixTuning(length=3, reparameterize=False, init="real_words", init_text="a b",
                        vocabulary=Ids())
  _, tree = _trained(method, config, params)
  # Encoder layer 0: the key projection of the normed embeddings of [5, 9, 5].
  layer = params["encoder"]["layers_0"]
  x = np.asarray(params["token_embedder"]["embedding"])[[5, 9, 5]]
  x = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
  x = x * np.asarray(layer["pre_attention_layer_norm"]["scale"])
  want = (x @ np.asarray(layer["attention"]["key"]["kernel"])).reshape(
      3, config.num_heads, config.head_dim)
  got = np.asarray(tree["kv_prefixes"]["encoder"]["layers_0"]["key"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Cross-attention's: projections of the encoder's output, so not the embeddings'.
  cross = np.asarray(tree["kv_prefixes"]["cross"]["layers_0"]["key"])
  assert cross.shape == want.shape and not np.allclose(cross, want)


def test_settings_round_trip_and_detect(frozen):
  config, params, _, _ = frozen
  method = PrefixTuning(length=4, attention=["decoder"], hidden_dim=8)
  again = from_description(method.describe())
  assert again == method and again.attention == ("decoder",)
  _, tree = _trained(method, config, params)
  assert detect(tree) is PrefixTuning


@pytest.mark.parametrize("kwargs, words", [
    ({"attention": ("encoder", "self")}, "choose one or more of"),
    ({"attention": ()}, "choose one or more of"),
    ({"length": 0}, "PREFIX_LENGTH must be a positive integer"),
    ({"init": "real_words", "init_text": "good"}, "set reparameterize=False"),
    ({"init": "real_words", "reparameterize": False}, "needs init_text"),
    ({"init": "zeros"}, "choose one of"),
])
def test_bad_settings_say_what_to_change(kwargs, words):
  with pytest.raises(ValueError, match=words):
    PrefixTuning(**kwargs)


def test_an_export_refuses_another_model(frozen, tmp_path):
  config, params, _, _ = frozen
  method = PrefixTuning(length=2, hidden_dim=8)
  _, tree = _trained(method, config, params)
  fp = exports.fingerprint(params)
  path = exports.save_export(tmp_path / "p.npz", method.export(jax.device_get(tree), config),
                             method.sidecar(config, fp, step=7))
  arrays, sidecar = exports.load_export(path)
  assert sidecar["method"] == "prefix_tuning" and sidecar["step"] == 7
  assert sidecar["arrays"]["encoder/layers_0/key"]["shape"] == [2, 4, 8]
  method.check_sidecar(sidecar, config, fp, str(path))  # the model it was trained on
  other = jax.tree.map(lambda x: x + 1.0, params)
  with pytest.raises(CheckpointError, match="same shape, other weights"):
    method.check_sidecar(sidecar, config, exports.fingerprint(other), str(path))
  with pytest.raises(CheckpointError, match="num_heads 4 vs 2"):
    method.check_sidecar(sidecar, config.replace(num_heads=2), fp, str(path))
  with pytest.raises(CheckpointError, match="exported by 'prefix_tuning'"):
    from prompt_tuning.methods import PromptTuning
    PromptTuning(length=2).check_sidecar(sidecar, config, fp, str(path))
  with pytest.raises(CheckpointError, match=r"shape \(2, 4, 8\).*expects.*\(2, 2, 8\)"):
    method.load(arrays, config.replace(num_heads=2), str(path))
  with pytest.raises(CheckpointError, match="name the output p.npz"):
    exports.save_export(tmp_path / "p.npy", arrays)
