"""The Flax T5 itself: parameter tree, logical axes, presets, dtypes, remat, bad input."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.models import T5Config, get_config
from prompt_tuning.models.network import T5

ENC = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
DEC = jnp.array([[0, 3, 4], [0, 5, 1]])


def _abstract_params(config):
  return jax.eval_shape(lambda: T5(config).init_params(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("preset, expected", [
    # Parameter counts of the public checkpoints as transformers reports them.
    ("t5_1_0_small", 60_506_624), ("t5_1_0_base", 222_903_552),
    ("t5_1_1_small", 76_961_152), ("t5_1_1_lm100k_base", 247_577_856)])
def test_presets_have_the_public_parameter_counts(preset, expected):
  params = nn.meta.unbox(_abstract_params(get_config(preset)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  # transformers also counts the relative bias only once per stack, as we do.
  assert count == expected


def test_parameter_tree_is_t5x_and_every_parameter_has_logical_axes():
  config = get_config("tiny")
  boxed = _abstract_params(config)
  specs = flax.traverse_util.flatten_dict(nn.get_partition_spec(boxed), sep="/")
  assert specs["token_embedder/embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert specs["encoder/layers_0/attention/query/kernel"] == jax.sharding.PartitionSpec(
      "embed", "joined_kv")
  assert specs["encoder/layers_1/attention/out/kernel"] == jax.sharding.PartitionSpec(
      "joined_kv", "embed")
  assert specs["decoder/layers_1/mlp/wi_1/kernel"] == jax.sharding.PartitionSpec("embed", "mlp")
  assert specs["decoder/layers_0/mlp/wo/kernel"] == jax.sharding.PartitionSpec("mlp", "embed")
  assert specs["encoder/relpos_bias/rel_embedding"] == jax.sharding.PartitionSpec(
      "heads", "relpos_buckets")
  assert specs["decoder/logits_dense/kernel"] == jax.sharding.PartitionSpec("embed", "vocab")
  for name in ["encoder/encoder_norm/scale", "decoder/decoder_norm/scale",
               "decoder/layers_0/pre_cross_attention_layer_norm/scale",
               "decoder/layers_0/encoder_decoder_attention/key/kernel"]:
    assert name in specs
  assert all(spec is not None and len(spec) > 0 for spec in specs.values())


def test_t5_1_0_has_single_wi_and_no_logits_dense():
  config = get_config("tiny", mlp_activations=("relu",), logits_via_embedding=True)
  flat = flax.traverse_util.flatten_dict(nn.meta.unbox(_abstract_params(config)), sep="/")
  assert "encoder/layers_0/mlp/wi/kernel" in flat
  assert "encoder/layers_0/mlp/wi_0/kernel" not in flat
  assert not any("logits_dense" in k for k in flat)


def test_remat_and_bfloat16_agree_with_float32():
  config = get_config("tiny", dropout_rate=0.0)
  params = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(1)))
  ref = np.asarray(T5(config).apply({"params": params}, ENC, DEC))
  remat = np.asarray(T5(config.replace(remat=True)).apply({"params": params}, ENC, DEC))
  np.testing.assert_allclose(remat, ref, rtol=1e-6, atol=1e-6)
  bf16 = T5(config.replace(dtype="bfloat16")).apply({"params": params}, ENC, DEC)
  assert bf16.dtype == jnp.float32  # logits come back in float32 for a stable loss
  np.testing.assert_allclose(np.asarray(bf16), ref, atol=0.1 * np.abs(ref).max())


def test_dropout_only_when_enabled():
  config = get_config("tiny", dropout_rate=0.3)
  params = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(1)))
  model = T5(config)
  a = model.apply({"params": params}, ENC, DEC)
  b = model.apply({"params": params}, ENC, DEC)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = model.apply({"params": params}, ENC, DEC, enable_dropout=True,
                  rngs={"dropout": jax.random.PRNGKey(2)})
  assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("field, value, words", [
    ("emb_dim", 0, "emb_dim must be a positive integer"),
    ("mlp_activations", ("swish",), "mlp_activations"),
    ("dtype", "int8", "dtype"),
    ("dropout_rate", 1.5, "dropout_rate")])
def test_bad_config_is_named(field, value, words):
  with pytest.raises(ValueError, match=words):
    get_config("tiny", **{field: value})


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(ValueError, match="t5_1_1_small"):
    get_config("t5_1_1_smol")


def test_config_round_trips_through_dict():
  config = get_config("t5_1_0_small")
  assert T5Config.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match="unknown T5Config fields"):
    T5Config.from_dict({**config.to_dict(), "d_model": 3})
