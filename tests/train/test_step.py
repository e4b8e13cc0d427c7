"""The jitted step: mesh-independence of the numbers, real sharding, learning, bad input."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import from_sampled_vocab, init_prompt_params, prompted_t5
from prompt_tuning.train import optimizers, partitioning
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import PROMPT_ONLY

CONFIG = get_config("tiny", dropout_rate=0.0)


@pytest.fixture(scope="module")
def parts():
  frozen = nn.meta.unbox(T5(CONFIG).init_params(jax.random.PRNGKey(0)))
  model = prompted_t5(CONFIG, 4, from_sampled_vocab(100))
  prompt = nn.meta.unbox(init_prompt_params(model, frozen, jax.random.PRNGKey(1)))
  return model, frozen, prompt


def _batch(rng, batch=8, inputs=12, targets=5):
  return {"encoder_input_tokens": rng.randint(2, 128, (batch, inputs)).astype(np.int32),
          "decoder_input_tokens": rng.randint(2, 128, (batch, targets)).astype(np.int32),
          "decoder_target_tokens": rng.randint(2, 128, (batch, targets)).astype(np.int32)}


def _program(model, mesh_shape, **kwargs):
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = partitioning.make_mesh(mesh_shape, devices)
  return step_lib.build(model, optimizers.adafactor(), mesh, step_lib.abstract_params(model),
                        PROMPT_ONLY, **kwargs)


def _two_steps(parts, mesh_shape):
  model, frozen, prompt = parts
  program = _program(model, mesh_shape)
  state, placed_frozen = program.init_state(prompt, frozen)
  rng = np.random.RandomState(0)
  losses = []
  for _ in range(2):
    state, metrics = program.train_step(state, placed_frozen, program.place_batch(_batch(rng)))
    losses.append(float(metrics["loss"]))
  return losses, np.asarray(state.params["encoder_prompt"]["prompt"]), placed_frozen


@pytest.mark.parametrize("mesh_shape", [(4, 2), (2, 4)])
def test_sharded_step_equals_single_device(parts, mesh_shape):
  assert len(jax.devices()) >= 8, "tests/conftest.py asks XLA for 8 host devices"
  ref_losses, ref_prompt, _ = _two_steps(parts, (1, 1))
  losses, prompt, frozen = _two_steps(parts, mesh_shape)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  np.testing.assert_allclose(prompt, ref_prompt, rtol=1e-5, atol=1e-6)
  assert not np.allclose(prompt, np.asarray(parts[2]["encoder_prompt"]["prompt"]))
  # The frozen model is really split over `model`: kernels' joined_kv/mlp/vocab axes.
  layer = frozen["encoder"]["layers_0"]
  model_size = mesh_shape[1]
  for kernel, dim in [(layer["attention"]["query"]["kernel"], 1),
                      (layer["attention"]["out"]["kernel"], 0),
                      (layer["mlp"]["wi_0"]["kernel"], 1), (layer["mlp"]["wo"]["kernel"], 0),
                      (frozen["token_embedder"]["embedding"], 0)]:
    spec = kernel.sharding.spec
    assert spec[dim] == "model", spec
    shard = kernel.addressable_shards[0].data.shape
    assert shard[dim] == kernel.shape[dim] // model_size


def test_prompt_learns_a_toy_task(parts):
  """A prompt alone steers a frozen random model to emit a fixed answer.

  Every example's target is `7 9 EOS`, whatever the input. Guessing uniformly costs
  ln(128) ≈ 4.85 nats per token; we ask for half of that and greedy accuracy ≥ 95 %,
  which a prompt that did not learn the task (loss ≈ 6 at the start) cannot reach.
  """
  model, frozen, _ = parts
  model = prompted_t5(CONFIG, 16, from_sampled_vocab(100))
  prompt = nn.meta.unbox(init_prompt_params(model, frozen, jax.random.PRNGKey(1)))
  mesh = partitioning.make_mesh((1, 1), jax.devices()[:1])
  program = step_lib.build(model, optimizers.adafactor(learning_rate=1.0), mesh,
                           step_lib.abstract_params(model), PROMPT_ONLY,
                           step_lib.LossConfig(z_loss=0.0, enable_dropout=False))
  state, placed = program.init_state(prompt, frozen)
  rng = np.random.RandomState(0)
  target = np.tile(np.array([7, 9, 1], np.int32), (8, 1))
  for i in range(200):
    batch = {"encoder_input_tokens": rng.randint(3, 128, (8, 10)).astype(np.int32),
             "decoder_input_tokens": np.concatenate([np.zeros((8, 1), np.int32),
                                                     target[:, :-1]], 1),
             "decoder_target_tokens": target}
    state, metrics = program.train_step(state, placed, program.place_batch(batch))
    if i == 0:
      first = float(metrics["loss"])
  assert first > np.log(128)
  assert float(metrics["loss"]) < 0.5 * np.log(128)
  assert float(metrics["token_accuracy"]) >= 0.95


def test_padding_targets_do_not_count(parts):
  model, frozen, prompt = parts
  program = _program(model, (1, 1))
  state, placed = program.init_state(prompt, frozen)
  batch = _batch(np.random.RandomState(1))
  full = program.eval_step(state, placed, program.place_batch(batch))
  padded = dict(batch)
  extra = np.zeros((8, 3), np.int32)
  for key in ("decoder_input_tokens", "decoder_target_tokens"):
    padded[key] = np.concatenate([batch[key], extra], axis=1)
  again = program.eval_step(state, placed, program.place_batch(padded))
  np.testing.assert_allclose(float(again["loss"]), float(full["loss"]), rtol=1e-5)
  assert float(full["num_target_tokens"]) == 8 * 5


def test_bad_mesh_and_batch_are_named():
  with pytest.raises(ValueError, match=r"MESH_SHAPE \(3, 1\) needs 3 devices but there are 8"):
    partitioning.make_mesh((3, 1))
  with pytest.raises(ValueError, match=r"MESH_SHAPE \(-1, 3\) does not divide the 8 devices"):
    partitioning.make_mesh((-1, 3))
  with pytest.raises(ValueError, match=r"MESH_SHAPE must be \(data, model\)"):
    partitioning.make_mesh((8,))
  mesh = partitioning.make_mesh((4, 2))
  with pytest.raises(ValueError, match="BATCH_SIZE 6 does not divide over the 4 devices"):
    partitioning.check_batch_size(6, mesh)
  partitioning.check_batch_size(8, mesh)


def test_mesh_defaults_to_all_devices_on_data():
  mesh = partitioning.make_mesh()
  assert dict(mesh.shape) == {"data": len(jax.devices()), "model": 1}
